"""Upscaling along z on generated volumes: PSNR along z, bias and background noise beside cubic
and nearest interpolation along z, and a figure of orthogonal slices (docs/isotropic.md).

Volumes are generated here (nuclei, filaments, puncta; an anisotropic Gaussian PSF; Poisson
noise on an offset), sampled isotropically; the input is made by averaging each run of ``k``
planes along z (a thick optical section), and every method is asked for the original planes
back (``--scale k,1,1``). Run: ``python scripts/isotropic_report.py [--figure docs/images/...]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage


def volume(seed: int, shape=(48, 96, 96), noise: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) uint16 volume: z, y, x at one spacing; the PSF is 3x longer along z."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    d = np.zeros(shape, np.float32)
    for _ in range(6):  # nuclei: soft ellipsoids
        c = rng.uniform((6, 10, 10), np.array(shape) - (6, 10, 10))
        r = rng.uniform((5, 8, 8), (9, 16, 16))
        e = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
        d += rng.uniform(0.3, 0.6) / (1 + np.exp(np.minimum((e - 1) * 8, 60)))
    for _ in range(8):  # filaments: random smooth curves
        p = rng.uniform((0, 0, 0), shape)
        v = rng.normal(size=3)
        for _ in range(160):
            v = v / np.linalg.norm(v) + rng.normal(scale=0.25, size=3)
            p = p + v / np.linalg.norm(v)
            i = np.round(p).astype(int)
            if np.all(i >= 0) and np.all(i < shape):
                d[tuple(i)] += 1.5
    pts = rng.integers((0, 0, 0), shape, size=(60, 3))  # puncta
    d[tuple(pts.T)] += rng.uniform(2, 5, len(pts))
    clean = ndimage.gaussian_filter(d, sigma=(3.0, 1.0, 1.0))
    clean = 200 + 3000 * clean / clean.max()
    noisy = rng.poisson(clean / (noise * 100) ** 2 * 1.0) * (noise * 100) ** 2 if noise else clean
    return np.clip(noisy, 0, 65535).astype(np.uint16), clean.astype(np.float32)


def thin(v: np.ndarray, k: int) -> np.ndarray:
    """Average each run of k planes along z (the input the methods see)."""
    n = v.shape[0] // k * k
    return np.round(v[:n].reshape(n // k, k, *v.shape[1:]).astype(np.float64).mean(1)).astype(v.dtype)


def along_z(lr: np.ndarray, k: int, order: int) -> np.ndarray:
    """Spline interpolation along z at LIIF's pixel centres ((j + 0.5) / k - 0.5), nearest at the ends."""
    n = lr.shape[0] * k
    pos = (np.arange(n) + 0.5) / k - 0.5
    z, y, x = np.meshgrid(pos, np.arange(lr.shape[1]), np.arange(lr.shape[2]), indexing="ij")
    out = ndimage.map_coordinates(lr.astype(np.float64), [z, y, x], order=order, mode="nearest")
    return np.clip(np.round(out), 0, 65535).astype(lr.dtype)


def psnr(a, ref, peak) -> float:
    return float(10 * np.log10(peak**2 / np.mean((a.astype(np.float64) - ref) ** 2)))


def measure(out, gt_noisy, gt_clean, lr, k) -> dict:
    peak = float(gt_clean.max() - gt_clean.min())
    low = ndimage.gaussian_filter(gt_noisy.astype(np.float64), sigma=(1.0, 0.7, 0.7))
    bg = gt_clean <= np.percentile(gt_clean, 20)  # background: the dimmest fifth of the clean volume
    n = out.shape[0]
    return {"psnr": psnr(out, gt_noisy[:n], peak), "psnr_low": psnr(out, low[:n], peak),
            "psnr_clean": psnr(out, gt_clean[:n], peak),
            "bias": float((out.mean() - lr.mean()) / peak * 100),
            "bg_noise": float(np.std(out[bg[:n]].astype(np.float64) - gt_clean[:n][bg[:n]]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="microscopy,default")
    ap.add_argument("--scales", default="2,3,4")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--figure", help="write a PNG of orthogonal slices (x3, first seed)")
    args = ap.parse_args()
    from napari_liif import load_model, upscale

    models = {m: load_model(m) for m in args.models.split(",")}
    rows = {}
    t0 = time.perf_counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        noisy, clean = volume(seed)
        for k in (int(s) for s in args.scales.split(",")):
            lr = thin(noisy, k)
            outs = {"nearest": along_z(lr, k, 0), "cubic": along_z(lr, k, 3)}
            for name, m in models.items():
                outs[name] = upscale(lr, scale=(k, 1, 1), model=m)
            for name, out in outs.items():
                rows.setdefault((k, name), []).append(measure(out, noisy, clean, lr, k))
            if args.figure and k == 3 and seed == int(args.seeds.split(",")[0]):
                figure(args.figure, noisy, outs)
    print(f"# {time.perf_counter() - t0:.0f} s; PSNR in dB over the clean volume's range; bias in % of it; "
          "bg noise: std of (output - clean) in the dimmest fifth, in counts")
    print("| z factor | method | PSNR vs noisy GT | vs low-passed GT | vs clean GT | bias % | bg noise | bg noise / cubic |")
    print("|---|---|---|---|---|---|---|---|")
    for (k, name), ms in sorted(rows.items()):
        avg = {key: float(np.mean([m[key] for m in ms])) for key in ms[0]}
        cubic = float(np.mean([m["bg_noise"] for m in rows[(k, "cubic")]]))
        print(f"| x{k} | {name} | {avg['psnr']:.2f} | {avg['psnr_low']:.2f} | {avg['psnr_clean']:.2f} | "
              f"{avg['bias']:+.3f} | {avg['bg_noise']:.1f} | {avg['bg_noise'] / cubic:.2f} |")


def figure(path: str, gt: np.ndarray, outs: dict) -> None:
    """XZ slices through the middle row: ground truth, nearest (the input), cubic, ours."""
    from skimage.io import imsave

    y = gt.shape[1] // 2
    panels = [gt[:, y]] + [outs[k][:, y] for k in ("nearest", "cubic") + tuple(k for k in outs if k not in
                                                                             ("nearest", "cubic"))[:1]]
    lo, hi = np.percentile(gt, (0.5, 99.8))
    strip = np.concatenate([np.pad(p.astype(np.float64), ((0, 0), (0, 4)), constant_values=hi) for p in panels], 1)
    img = np.clip((strip - lo) / (hi - lo) * 255, 0, 255).astype(np.uint8)
    imsave(path, np.repeat(np.repeat(img, 3, 0), 3, 1), check_contrast=False)


if __name__ == "__main__":
    main()
