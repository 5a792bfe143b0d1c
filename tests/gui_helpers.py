"""Helpers for the live-zoom GUI tests: tiny models, canvas control and expected images."""

from __future__ import annotations

import numpy as np
import torch

from napari_liif import models
from napari_liif.checkpoint import save_safetensors
from napari_liif.engine import LiifModel
from napari_liif.live.viewport import Camera2D


def tiny_spec(bilinear_residual: bool = True) -> dict:
    return {"name": "liif", "args": {
        "encoder_spec": {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8, "no_upsampling": True}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16, 16]}},
        "bilinear_residual": bilinear_residual}}


def tiny_model(identity: bool = False, seed: int = 0) -> LiifModel:
    """A small LIIF on the CPU. ``identity=True``: the last decoder layer is zero, so with the
    bilinear residual the model *is* bilinear interpolation (border-clamped, pixel centres).

    Otherwise PyTorch's default weights with the last layer x20, not ``helpers_models.realistic_init``:
    measured on smooth (cubic-zoomed noise) 48 x 64 and random 24 x 30 images at x4 (seeds 3 and 4,
    those of the tests), the render minus the same render with zeroed latents has a std of 7.6-16.4
    grey levels of 255 (realistic_init: 6.1-12.3), under 1 % clamped; the live tests compare
    overlays with engine renders within 1e-3 (uint8 data) or 1e-5 (float data in [0, 1]),
    thousands of times less, so a wrong or stale latent cannot pass unseen."""
    torch.manual_seed(seed)
    spec = tiny_spec(True)
    net = models.make(spec).eval()
    last = net.imnet.linears[-1]
    with torch.no_grad():
        if identity:
            last.weight.zero_()
            last.bias.zero_()
        else:
            last.weight.mul_(20.0)  # visible detail on top of the bilinear base
    return LiifModel(net, spec, device="cpu")


def tiny_checkpoint(path, identity: bool = False, seed: int = 0):
    """``tiny_model(identity, seed)`` written with the project's own saver as a ``.safetensors``
    file at ``path``: for tests that load through the real loader (checkpoint, device and
    precision as the widgets pass them). Returns the path."""
    m = tiny_model(identity=identity, seed=seed)
    return save_safetensors(path, m.net, m.spec)


def bilinear_at(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a 2D image at data coordinates (pixel centres at integers),
    clamped at the border as ``grid_sample(padding_mode='border', align_corners=False)``."""
    h, w = img.shape
    y = np.clip(ys, 0, h - 1)
    x = np.clip(xs, 0, w - 1)
    y0 = np.floor(y).astype(int)
    x0 = np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    ty, tx = y - y0, x - x0
    top = img[y0, x0] * (1 - tx) + img[y0, x1] * tx
    bot = img[y1, x0] * (1 - tx) + img[y1, x1] * tx
    return top * (1 - ty) + bot * ty


def set_canvas(viewer, h: int, w: int) -> None:
    """Fix the canvas to ``h x w`` screen pixels (uses the Qt canvas: test-only)."""
    from qtpy.QtWidgets import QApplication

    viewer.window._qt_viewer.canvas.native.setFixedSize(w, h)
    for _ in range(20):
        QApplication.processEvents()
        if tuple(viewer.canvas.size) == (h, w):
            return
    raise RuntimeError(f"canvas is {tuple(viewer.canvas.size)}, wanted {(h, w)}")


def camera(viewer) -> Camera2D:
    cam = viewer.scene.camera
    return Camera2D(tuple(cam.center[-2:]), cam.zoom, tuple(viewer.canvas.size))


def screen_coords(viewer, layer_scale=(1.0, 1.0), layer_translate=(0.0, 0.0)):
    """Data coordinates (ys, xs) of the centres of all canvas pixels, as (h, w) arrays."""
    cam = camera(viewer)
    (top, left), (h, w) = cam.top_left, cam.canvas
    ii, jj = np.mgrid[0:h, 0:w].astype(float)
    ys = (top + (ii + 0.5) / cam.zoom - layer_translate[0]) / layer_scale[0]
    xs = (left + (jj + 0.5) / cam.zoom - layer_translate[1]) / layer_scale[1]
    return ys, xs


def screenshot_gray(viewer) -> np.ndarray:
    """The canvas as float gray values 0..255 (the red channel of a gray colormap)."""
    return viewer.screenshot(canvas_only=True, flash=False)[..., 0].astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)
    return float(10 * np.log10(peak ** 2 / mse)) if mse > 0 else float("inf")
