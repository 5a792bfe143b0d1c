"""The stand-in mechanism on its own (Xvfb): an overlay holding the same picture as its source,
standing in for it, leaves the canvas exactly as napari draws the source alone, for every blending
mode and at opacity below 1; the source's layer state is never touched; closing restores all."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import napari  # noqa: F401
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("the stand-in GUI tests need a display: run them under xvfb-run -a", allow_module_level=True)

from gui_helpers import set_canvas  # noqa: E402

from napari_liif._qt.stand_in import StandIn, device_pixel_ratio  # noqa: E402

pytestmark = pytest.mark.gui


def shot(viewer):
    from qtpy.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(np.int16)


def state(layer):
    return (layer.visible, layer.opacity, layer.blending, layer.colormap.name, tuple(layer.contrast_limits))


@pytest.mark.parametrize("blending, opacity, below", [
    ("translucent", 0.5, True), ("additive", 1.0, True), ("minimum", 1.0, True), ("multiplicative", 0.8, True),
    ("minimum", 1.0, False), ("multiplicative", 1.0, False), ("additive", 0.7, False),
])
def test_an_identical_overlay_standing_in_leaves_the_canvas_unchanged(make_napari_viewer, blending, opacity, below):
    viewer = make_napari_viewer(show=True)
    set_canvas(viewer, 120, 160)
    rng = np.random.default_rng(1)
    if below:
        viewer.add_image(rng.integers(40, 200, (30, 40)).astype(np.uint8), colormap="cyan", name="below")
    img = rng.integers(0, 4000, (30, 40)).astype(np.uint16)
    src = viewer.add_image(img, colormap="magenta", blending=blending, opacity=opacity, contrast_limits=(0, 4000))
    viewer.reset_view()
    native = shot(viewer)
    before = state(src)
    ov = viewer.add_image(img[5:25, 8:30].astype(np.float32), translate=(5, 8), colormap="magenta",
                          blending=blending, opacity=opacity, contrast_limits=(0, 4000), name="ov")
    doubled = shot(viewer)
    stand = StandIn(viewer, src, ov)
    assert stand.ok
    stand.show(True)
    stood = shot(viewer)
    assert np.abs(stood - native).max() <= 1  # in place of the source, not on top of it
    assert state(src) == before
    if blending in ("additive", "translucent") or opacity < 1:
        assert np.abs(doubled - native).max() > 20  # what drawing on top of the source did
    stand.close()
    viewer.layers.remove(ov)
    assert np.abs(shot(viewer) - native).max() == 0 and state(src) == before


def test_only_the_overlay_extent_is_cut_out_and_follows_it(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    set_canvas(viewer, 120, 160)
    src = viewer.add_image(np.full((30, 40), 200, np.uint8), blending="additive")
    viewer.reset_view()
    ov = viewer.add_image(np.zeros((10, 10), np.uint8), translate=(2, 3), blending="additive", name="ov",
                          contrast_limits=(0, 255))
    stand = StandIn(viewer, src, ov)
    stand.show(True)
    img = shot(viewer)[..., 0]
    cam = viewer.scene.camera
    h, w = viewer.canvas.size

    def px(row, col):  # the canvas pixel showing world (row, col)
        return (int((row - cam.center[-2]) * cam.zoom + h / 2), int((col - cam.center[-1]) * cam.zoom + w / 2))

    assert img[px(6.5, 7.5)] == 0 and img[px(20, 30)] == 200  # inside the overlay: only its zeros
    ov.translate = (15, 25)
    stand.update()
    img = shot(viewer)[..., 0]
    assert img[px(6.5, 7.5)] == 200 and img[px(19, 29)] == 0
    stand.show(False)
    assert shot(viewer)[..., 0][px(19, 29)] == 200
    stand.close()


def test_hiding_toggling_and_reordering_keep_the_bottom_layer_blending(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    set_canvas(viewer, 120, 160)
    img = np.random.default_rng(2).integers(10, 250, (30, 40)).astype(np.uint8)
    src = viewer.add_image(img, blending="minimum")  # bottom-most: blended against nothing
    viewer.reset_view()
    native = shot(viewer)
    ov = viewer.add_image(img.astype(np.float32), blending="minimum", name="ov", contrast_limits=(0, 255))
    stand = StandIn(viewer, src, ov)
    stand.show(True)
    assert np.abs(shot(viewer) - native).max() <= 1
    other = viewer.add_image(np.zeros((4, 4), np.uint8), name="other", visible=False)
    viewer.layers.move(viewer.layers.index(other), len(viewer.layers))
    src.visible = False
    src.visible = True  # napari re-blends every layer on these
    stand.sync()
    assert np.abs(shot(viewer) - native).max() <= 1
    assert device_pixel_ratio(viewer) == 1.0
    stand.close()


@pytest.mark.parametrize("blending", ["minimum", "multiplicative", "additive", "translucent"])
def test_partly_rendered_overlay_draws_only_its_tiles(make_napari_viewer, blending):
    viewer = make_napari_viewer(show=True)
    set_canvas(viewer, 120, 160)
    rng = np.random.default_rng(4)
    viewer.add_image(rng.integers(60, 250, (30, 40)).astype(np.uint8), colormap="yellow", name="below")
    img = rng.integers(0, 255, (30, 40)).astype(np.uint8)
    src = viewer.add_image(img, blending=blending, opacity=0.6, colormap="gray")
    viewer.reset_view()
    native = shot(viewer)
    buf = np.full((30, 40), np.nan, np.float32)  # tiles of 8 x 8 texels, two of them rendered
    buf[8:16, 0:8], buf[16:24, 24:32] = img[8:16, 0:8], img[16:24, 24:32]
    ov = viewer.add_image(buf, blending=blending, opacity=0.6, colormap="gray", contrast_limits=(0, 255), name="ov")
    stand = StandIn(viewer, src, ov)
    covered = np.zeros((4, 5), bool)
    covered[1, 0] = covered[2, 3] = True
    stand.set_coverage(covered, origin=(0, 0), tile=8)
    assert np.abs(shot(viewer) - native).max() <= 1
    buf2 = np.where(np.isnan(buf), 0, 255 - np.nan_to_num(buf)).astype(np.float32)  # a different picture
    ov.data = buf2
    stand.update()
    changed = np.abs(shot(viewer) - native).max(-1) > 3
    assert 0 < changed.mean() < 0.2  # only the two tiles show the overlay's picture
    stand.close()
