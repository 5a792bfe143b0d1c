"""The microscopy figures of docs/microscopy.md and docs/model-card.md, for any set of models.

    python scripts/microscopy_report.py MODEL [MODEL ...] [--scenes 8] [--no-skimage]

MODEL is a checkpoint path or a bundled name ("default", "microscopy"). For each model it prints
markdown tables of ``napari-liif evaluate --data microscopy`` at x2 and x4 (the held-out sets low, noisy
and binned: the honesty table with low-passed PSNR and dark floors, then PSNR/SSIM without and with
flux preservation), the first model's held-out set (``legacy``), the fractional scale x2.5 (scenes of
the held-out seed sequence, 190 px seen with 76 camera pixels) and, unless ``--no-skimage``, the honesty
table of the one fluorescence-like image
bundled with scikit-image, ``hubble_deep_field`` (point sources and faint smudges on a dark sky; its
mean over the colours), binned like a camera; its own noise stays in the target. (scikit-image's other
candidates do not fit: ``cell`` is a smooth brightfield image, ``microaneurysms`` a 102-px retina crop.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def skimage_scenes(scales=(2, 4), side: int = 480) -> dict[str, list[dict]]:
    """A centre crop of scikit-image's Hubble deep field as "scenes": LR = area average (camera binning)."""
    from skimage import data

    from napari_liif.flux import area_average

    out = {}
    for name in ("hubble_deep_field",):
        img = np.asarray(getattr(data, name)(), np.float64)
        img = img.mean(-1) if img.ndim == 3 else img
        h, w = img.shape
        c = min(side, h, w)
        hr = img[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
        out[name] = [{"lr": area_average(hr, (c // s, c // s)), "hr": hr, "scale": s} for s in scales]
    return out


def fractional_scenes(n: int, hr_side: int = 190, lr_side: int = 76) -> list[dict]:
    """Held-out-sequence scenes seen by a camera with 2.5x larger pixels (190 px -> 76 px), cameras drawn
    as for training (any noise level, gain kept within 16 bits)."""
    from napari_liif.train import microscopy as mic

    out = []
    area = (hr_side / lr_side) ** 2
    for k in mic.HELD_OUT_SEEDS[:n]:
        rng = np.random.default_rng((13, 1, k))
        clean, _ = mic.scene((hr_side, hr_side), rng)
        cam = mic.Camera.random(rng)
        cam = cam.within_range(area * cam.photons * clean.max())
        obs = mic.observe(clean, (lr_side, lr_side), cam, np.random.default_rng((13, 4, k)))
        out.append({"lr": obs["lr"], "hr": obs["hr"], "scale": hr_side / lr_side})
    return out


def table(name: str, rows: list[dict]) -> str:
    lines = [f"| {name} | scale | PSNR | bicubic | gain dB | SSIM | bicubic SSIM | bias % | noise gain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.get('kind', '')} | x{r['scale']} | {r['liif_psnr']:.2f} | {r['bicubic_psnr']:.2f} | "
                     f"{r['gain_db']:+.2f} | {r['liif_ssim']:.4f} | {r['bicubic_ssim']:.4f} | "
                     f"{r['liif_bias_pct']:+.3f} | {r['noise_gain']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    from napari_liif.engine import load_model
    from napari_liif.train.evaluate import evaluate_scenes, format_floor_table
    from napari_liif.train.microscopy import held_out_scenes

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--no-skimage", action="store_true")
    args = ap.parse_args()
    kinds = ("low", "noisy", "binned")
    scenes = held_out_scenes(2, args.scenes, kinds=kinds) + held_out_scenes(4, args.scenes, kinds=kinds)
    legacy = held_out_scenes(2, args.scenes, kinds=("legacy",)) + held_out_scenes(4, args.scenes, kinds=("legacy",))
    frac = fractional_scenes(args.scenes)
    extra = {} if args.no_skimage else skimage_scenes()
    for m in args.models:
        t0 = time.perf_counter()
        model = load_model(None if m == "default" else m, device="cpu")
        print(f"\n## {m}\n")
        rows = evaluate_scenes(model, scenes)
        print(format_floor_table(rows))
        print()
        print(table("held-out sets", rows))
        print()
        print(table("... flux preserved", evaluate_scenes(model, scenes, preserve_flux=True)))
        print()
        print(table("first model's set", evaluate_scenes(model, legacy)))
        print()
        print(table("fractional (x2.5)", evaluate_scenes(model, frac)))
        for name, sc in extra.items():
            print()
            rows = evaluate_scenes(model, sc)
            print(f"skimage {name}")
            print(format_floor_table(rows))
        print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
