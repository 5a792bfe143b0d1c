"""Live zoom with an LM-LIIF model: the alignment, burst and engine-equality checks of
test_live_zoom pass for the second family too, and the displayed plane is encoded in the
background once a view has settled, so a pan across it never waits for the encoder."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import napari  # noqa: F401

import napari_liif  # noqa: E402
from gui_helpers import bilinear_at, screen_coords, screenshot_gray, set_canvas  # noqa: E402
from lmliif_helpers import build_lmliif, lmliif_spec  # noqa: E402
from test_live_zoom import assert_overlay_matches_engine, camera_burst, look_at, smooth_random  # noqa: E402

pytestmark = pytest.mark.gui


def lm_model(identity: bool, seed: int = 0):
    """A small LM-LIIF with the bilinear residual; ``identity``: its output layer zeroed, so the
    model is exactly bilinear interpolation."""
    from napari_liif.engine import LiifModel

    spec = lmliif_spec(bilinear_residual=True)
    net = build_lmliif(spec, seed=seed, out_gain=0.2)
    if identity:
        with torch.no_grad():
            net.imnet.linears[-1].weight.zero_()
            net.imnet.linears[-1].bias.zero_()
    return LiifModel(net, spec, device="cpu")


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    set_canvas(v, 160, 200)
    return v


def test_lmliif_overlay_is_pixel_aligned(viewer):
    img = smooth_random((40, 50), seed=1)
    layer = viewer.add_image(img, colormap="gray", contrast_limits=(0, 255))
    look_at(viewer, (20.3, 24.6), 4.7)
    live = napari_liif.attach(viewer, layer, lm_model(True), tile=64)
    try:
        live.wait_idle(60)
        shot = screenshot_gray(viewer)
        ys, xs = screen_coords(viewer)
        inside = (ys >= -0.5) & (ys < 39.5) & (xs >= -0.5) & (xs < 49.5)
        inside &= (np.abs(ys - np.round(ys)) != 0.5) & (np.abs(xs - np.round(xs)) != 0.5)
        err = np.abs(shot - bilinear_at(img.astype(float), ys, xs))[inside]
        print(f"LM-LIIF alignment: mean |err| {err.mean():.3f}, max {err.max():.2f} gray levels")
        assert err.max() <= 1.5 and err.mean() <= 0.5
    finally:
        live.detach()


def test_lmliif_burst_of_100_camera_changes_ends_correct(viewer, qtbot):
    model = lm_model(False, seed=3)
    img = smooth_random((64, 80), seed=4)
    layer = viewer.add_image(img, colormap="gray")
    look_at(viewer, (30, 40), 3.0)
    live = napari_liif.attach(viewer, layer, model, tile=48, debounce_ms=20)
    try:
        camera_burst(viewer, qtbot)
        live.wait_idle(120)
        assert live.plan.lattice.zoom == pytest.approx(4.4)
        assert_overlay_matches_engine(live, model, viewer, layer)
    finally:
        live.detach()


def test_plane_is_encoded_in_the_background_so_a_pan_never_waits_for_the_encoder(viewer, qtbot):
    model = lm_model(False, seed=5)
    img = smooth_random((120, 120), seed=6)
    layer = viewer.add_image(img, colormap="gray")
    look_at(viewer, (15, 15), 6.0)  # a corner: a small part of the plane
    live = napari_liif.attach(viewer, layer, model, tile=64, encoder_tile=32)
    try:
        live.wait_idle(60)
        deadline = time.monotonic() + 60
        while not live.plane_encoded and time.monotonic() < deadline:
            qtbot.wait(20)
        assert live.plane_encoded
        whole = live.encoded_pixels
        assert whole >= img.size  # every input pixel went through the encoder: the view covers ~3 %
        look_at(viewer, (105, 105), 6.0)  # the opposite corner
        live.wait_idle(60)
        assert live.encoded_pixels == whole  # nothing new through the encoder
        assert_overlay_matches_engine(live, model, viewer, layer)
    finally:
        live.detach()
