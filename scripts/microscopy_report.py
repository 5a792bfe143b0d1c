"""The microscopy figures of docs/microscopy.md and docs/model-card.md, for any set of models.

    python scripts/microscopy_report.py MODEL [MODEL ...] [--scenes 8] [--no-skimage]

MODEL is a checkpoint path (or "default" for the bundled default model). For each model it prints
markdown tables of ``napari-liif evaluate --data microscopy`` at x2 and x4 (held-out generated scenes,
without and with flux preservation), the same at the fractional scale x2.5 (scenes of the held-out
seed sequence, 190 px seen with 76 camera pixels) and, unless ``--no-skimage``, of the one fluorescence-like image
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
    """Held-out-sequence scenes seen by a camera with 2.5x larger pixels (190 px -> 76 px)."""
    from napari_liif.train import microscopy as mic

    out = []
    for k in mic.HELD_OUT_SEEDS[:n]:
        rng = np.random.default_rng((13, 1, k))
        clean, _ = mic.scene((hr_side, hr_side), rng)
        cam = mic.Camera.random(rng)
        obs = mic.observe(clean, (lr_side, lr_side), cam, np.random.default_rng((13, 4, k)))
        out.append({"lr": obs["lr"], "hr": obs["hr"], "scale": hr_side / lr_side})
    return out


def table(name: str, rows: list[dict]) -> str:
    lines = [f"| {name} | scale | PSNR | bicubic | gain dB | SSIM | bicubic SSIM | bias % | noise gain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| | x{r['scale']} | {r['liif_psnr']:.2f} | {r['bicubic_psnr']:.2f} | {r['gain_db']:+.2f} | "
                     f"{r['liif_ssim']:.4f} | {r['bicubic_ssim']:.4f} | {r['liif_bias_pct']:+.3f} | "
                     f"{r['noise_gain']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    from napari_liif.engine import load_model
    from napari_liif.train.evaluate import evaluate_scenes
    from napari_liif.train.microscopy import held_out_scenes

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--no-skimage", action="store_true")
    args = ap.parse_args()
    scenes = held_out_scenes(2, args.scenes) + held_out_scenes(4, args.scenes)
    frac = fractional_scenes(args.scenes)
    extra = {} if args.no_skimage else skimage_scenes()
    for m in args.models:
        t0 = time.perf_counter()
        model = load_model(None if m == "default" else m, device="cpu")
        print(f"\n## {m}\n")
        print(table("held-out scenes", evaluate_scenes(model, scenes)))
        print()
        print(table("... flux preserved", evaluate_scenes(model, scenes, preserve_flux=True)))
        print()
        print(table("fractional (x2.5)", evaluate_scenes(model, frac)))
        print()
        print(table("... flux preserved", evaluate_scenes(model, frac, preserve_flux=True)))
        for name, sc in extra.items():
            print()
            print(table(f"skimage {name}", evaluate_scenes(model, sc)))
        print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
