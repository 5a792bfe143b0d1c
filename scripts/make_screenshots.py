"""Make the screenshots of docs/live-zoom.md: napari's own rendering vs live LIIF zoom.

Run under a display: ``xvfb-run -a python scripts/make_screenshots.py``. Writes PNGs to
docs/images/ and prints a Markdown table of PSNRs for the 4x-downsampled photograph.

* ``coffee_<mode>.png``: scikit-image's coffee photograph at zoom 6, napari ``nearest``, napari
  ``linear`` and LIIF;
* ``camera_x4_<mode>.png``: scikit-image's camera (held out from training) downsampled 4x and shown
  at zoom 4, with napari's interpolations, LIIF, and the full-resolution truth;
* ``widget.png``: the napari window with the LIIF zoom dock widget;
* ``upscale-widget.png`` (docs/batch.md): the LIIF upscale dock widget after upscaling the camera
  photograph, downsampled 4x, by 4 (grid view: the input, nearest, beside the result).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def settle(n: int = 20) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(n):
        QApplication.processEvents()


def set_canvas(viewer, h: int, w: int) -> None:
    viewer.window._qt_viewer.canvas.native.setFixedSize(w, h)  # script only: an exact canvas size
    settle()


def look(viewer, cy: float, cx: float, zoom: float) -> None:
    cam = viewer.scene.camera
    cam.zoom = zoom
    cam.center = (0.0,) * (len(cam.center) - 2) + (cy, cx)
    settle()


def save(path: Path, rgba: np.ndarray) -> None:
    import imageio.v3 as iio

    iio.imwrite(path, rgba[..., :3])
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def psnr(a, b) -> float:
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def coffee_views(model, out: Path, tile: int) -> None:
    import napari
    from skimage import data

    import napari_liif

    viewer = napari.Viewer(show=True)
    set_canvas(viewer, 300, 420)
    layer = viewer.add_image(data.coffee(), name="coffee")
    look(viewer, 255.0, 372.0, 6.0)  # the spoon and the rim of the cup
    for mode in ("nearest", "linear"):
        layer.interpolation2d = mode
        save(out / f"coffee_{mode}.png", viewer.screenshot(canvas_only=True, flash=False))
    layer.interpolation2d = "nearest"
    live = napari_liif.attach(viewer, layer, model, tile=tile)
    live.wait_idle(1800)
    save(out / "coffee_liif.png", viewer.screenshot(canvas_only=True, flash=False))
    live.detach()
    viewer.close()


def camera_x4(model, out: Path, tile: int) -> list[tuple[str, float]]:
    import napari
    import torch
    from skimage import data

    import napari_liif
    from napari_liif.train.patches import downsample

    hr = data.camera()
    lr = downsample(torch.from_numpy(hr / 255.0).float()[None].expand(3, -1, -1), (128, 128))[0].numpy()
    lr = np.round(lr * 255).astype(np.uint8)
    viewer = napari.Viewer(show=True)
    set_canvas(viewer, 256, 256)
    layer = viewer.add_image(lr, colormap="gray", contrast_limits=(0, 255), name="camera / 4")
    look(viewer, 63.5, 63.5, 4.0)  # canvas pixel (i, j) = full-resolution pixel (128 + i, 128 + j)
    truth = hr[128:384, 128:384]
    save(out / "camera_x4_truth.png", np.repeat(truth[..., None], 3, -1))
    scores = []
    for mode in ("nearest", "linear", "cubic", "lanczos", "spline36"):
        layer.interpolation2d = mode
        shot = viewer.screenshot(canvas_only=True, flash=False)
        scores.append((f"napari {mode}", psnr(shot[..., 0], truth)))
        save(out / f"camera_x4_{mode}.png", shot)
    layer.interpolation2d = "nearest"
    live = napari_liif.attach(viewer, layer, model, tile=tile)
    live.wait_idle(1800)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    scores.append(("LIIF live zoom", psnr(shot[..., 0], truth)))
    save(out / "camera_x4_liif.png", shot)
    live.detach()
    viewer.close()
    return scores


def widget_view(checkpoint, out: Path) -> None:
    from napari_liif._qt.view import open_viewer

    viewer, widget = open_viewer(None, checkpoint, device="cpu")
    viewer.window.resize(1280, 720)
    settle(50)
    widget.controller.wait_idle(1800)
    save(out / "widget.png", viewer.screenshot(canvas_only=False, flash=False))
    widget.shutdown()
    viewer.close()


def upscale_widget_view(checkpoint, out: Path) -> None:
    import time

    import napari
    import torch
    from qtpy.QtWidgets import QApplication
    from skimage import data

    from napari_liif._qt.batch_widget import UpscaleWidget
    from napari_liif.train.patches import downsample

    hr = data.camera()
    lr = downsample(torch.from_numpy(hr / 255.0).float()[None].expand(3, -1, -1), (128, 128))[0].numpy()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 720)
    viewer.add_image(np.round(lr * 255).astype(np.uint8), name="camera / 4", colormap="gray")
    widget = UpscaleWidget(viewer)
    viewer.window.add_dock_widget(widget, name="LIIF upscale", area="right")
    # a grayscale photograph: auto would take the microscopy model (single channel), so the photo
    # model is picked, as docs/microscopy.md tells users of grayscale photographs to do
    widget.options.set_checkpoint(checkpoint or "default")
    widget.options.device.value = "cpu"
    widget.value.value = "4"
    done = []
    widget.finished_job.connect(done.append)
    widget.run_layer()
    while not done:
        QApplication.processEvents()
        time.sleep(0.05)
    print(done[0])
    viewer.grid.enabled = True
    viewer.reset_view()
    settle(50)
    save(out / "upscale-widget.png", viewer.screenshot(canvas_only=False, flash=False))
    viewer.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "images"))
    p.add_argument("--checkpoint", default=None, help="model file (default: bundled)")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--only", choices=["coffee", "camera", "widget", "upscale"], default=None)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from napari_liif.engine import load_model

    model = load_model(args.checkpoint, device="cpu")
    print(f"model: {model.name} ({model.metadata.get('steps', '?')} training steps)")
    if args.only in (None, "coffee"):
        coffee_views(model, out, args.tile)
    if args.only in (None, "camera"):
        scores = camera_x4(model, out, args.tile)
        print("\n| rendering at zoom 4 | PSNR vs full resolution (dB) |\n| --- | --- |")
        for name, v in scores:
            print(f"| {name} | {v:.2f} |")
    if args.only in (None, "widget"):
        widget_view(args.checkpoint, out)
    if args.only in (None, "upscale"):
        upscale_widget_view(args.checkpoint, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
