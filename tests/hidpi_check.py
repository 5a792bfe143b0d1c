"""Run in a fresh process with QT_SCALE_FACTOR=2 (tests/test_live_compositing.py): napari's linear
rendering vs live zoom with the exactly-bilinear model; prints one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import napari  # noqa: E402
import numpy as np  # noqa: E402
from gui_helpers import set_canvas  # noqa: E402
from helpers_models import bilinear_model  # noqa: E402
from qtpy.QtWidgets import QApplication  # noqa: E402

import napari_liif  # noqa: E402
from napari_liif._qt.stand_in import device_pixel_ratio  # noqa: E402


def shot(viewer):
    for _ in range(3):
        QApplication.processEvents()
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(np.float64)


def main() -> None:
    viewer = napari.Viewer(show=True)
    set_canvas(viewer, 90, 120)
    rng = np.random.default_rng(0)
    img = rng.random((30, 40)).astype(np.float32)
    layer = viewer.add_image(img, colormap="gray", interpolation2d="linear", contrast_limits=(0, 1))
    cam = viewer.scene.camera
    cam.zoom, cam.center = 3.3, (0.0, 15.2, 19.7)
    native = shot(viewer)
    live = napari_liif.attach(viewer, layer, bilinear_model(), tile=64)
    live.wait_idle(120)
    out = shot(viewer)
    samples = live.overlay.data.shape
    live.detach()
    err = np.abs(out - native)
    print(json.dumps({"dpr": device_pixel_ratio(viewer), "canvas": list(viewer.canvas.size),
                      "screenshot": list(native.shape[:2]), "overlay": list(samples),
                      "mean_error": float(err.mean()), "p999": float(np.percentile(err, 99.9))}))
    viewer.close()


if __name__ == "__main__":
    main()
