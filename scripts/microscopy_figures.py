"""Before/after crops of docs/microscopy.md: a held-out generated fluorescence scene at x2 and x4.

    python scripts/microscopy_figures.py MICROSCOPY_MODEL [--scene 2] [--out docs/images]

Writes ``microscopy-scene{N}-x2.png`` and ``microscopy-scene{N}-x4.png``: one row of panels, left to right: what the
camera recorded (its pixels, enlarged), bicubic, the photo (default) model, the microscopy model,
and the clean high-resolution truth. Every panel of a figure shares one display map (square root of
the intensity between the truth's minimum and its 99.7th percentile, so the dim background and its
noise stay visible) and is shown at twice its size, pixel for pixel. Prints each panel's PSNR against
the truth on the crop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _display(a: np.ndarray, lo: float, hi: float, zoom: int) -> np.ndarray:
    u = np.sqrt(np.clip((a - lo) / (hi - lo), 0, 1))
    return np.kron((u * 255 + 0.5).astype(np.uint8), np.ones((zoom, zoom), np.uint8))


def figure(panels: list[tuple[str, np.ndarray]], lo: float, hi: float, path: Path, zoom: int = 2) -> None:
    from PIL import Image, ImageDraw

    tiles = [_display(a, lo, hi, zoom) for _, a in panels]
    h, w = tiles[0].shape
    gap, head = 6, 18
    canvas = Image.new("L", (len(tiles) * (w + gap) - gap, h + head), 255)
    draw = ImageDraw.Draw(canvas)
    for i, ((title, _), t) in enumerate(zip(panels, tiles)):
        x = i * (w + gap)
        canvas.paste(Image.fromarray(t), (x, head))
        draw.text((x + 2, 3), title, fill=0)
    canvas.save(path)


def main() -> None:
    from napari_liif.engine import load_model
    from napari_liif.train.evaluate import bicubic_gray, upscale_gray
    from napari_liif.train.metrics import psnr
    from napari_liif.train.microscopy import held_out_scene

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the microscopy model file")
    ap.add_argument("--scene", type=int, default=2, help="held-out scene number")
    ap.add_argument("--kind", default="legacy", choices=["legacy", "low", "noisy", "binned"],
                    help="held-out set (legacy: the first evaluation's, the figures in docs/microscopy.md)")
    ap.add_argument("--crop", type=int, nargs=3, default=(48, 48, 96), metavar=("Y", "X", "SIDE"),
                    help="crop of the high-resolution grid (multiples of 4)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    args = ap.parse_args()
    photo, micro = load_model(None, device="cpu"), load_model(args.model, device="cpu")
    y, x, side = args.crop
    for s in (2, 4):
        sc = held_out_scene(args.scene, s, kind=args.kind)
        lr, hr = sc["lr"].astype(np.float64), sc["clean"]
        outs = [("camera (native pixels)", np.kron(lr, np.ones((s, s)))),
                ("bicubic", bicubic_gray(lr, hr.shape)),
                ("photo model", upscale_gray(photo, lr, hr.shape)),
                ("microscopy model", upscale_gray(micro, lr, hr.shape)),
                ("truth (clean)", hr)]
        crops = [(t, a[y:y + side, x:x + side]) for t, a in outs]
        truth = crops[-1][1]
        lo, hi = float(truth.min()), float(np.percentile(truth, 99.7))
        tag = "" if args.kind == "legacy" else f"-{args.kind}"
        path = Path(args.out) / f"microscopy-scene{args.scene}{tag}-x{s}.png"
        figure(crops, lo, hi, path)
        span = float(hr.max() - hr.min())
        scores = ", ".join(f"{t}: {psnr(a / span, truth / span):.2f} dB" for t, a in crops[:-1])
        print(f"{path.name}: scene {args.scene}, crop ({y}, {x}, {side}); {scores}")


if __name__ == "__main__":
    main()
