"""Live zoom faithful to napari (Xvfb): with an exactly-bilinear model, the canvas with live zoom on
equals napari's own ``linear`` rendering, for additive channel stacks, translucent layers, minimum
and multiplicative blending and RGBA over another layer; the sources' state is untouched and the
canvas restored exactly on detach; all channels live at once share one render queue."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import napari  # noqa: F401
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("the live-zoom GUI tests need a display: run them under xvfb-run -a", allow_module_level=True)

from gui_helpers import set_canvas  # noqa: E402
from helpers_models import bilinear_model, tiny_model  # noqa: E402

import napari_liif  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    set_canvas(v, 120, 160)
    return v


@pytest.fixture(scope="module")
def bilinear():
    return bilinear_model()


def look_at(viewer, center, zoom):
    cam = viewer.scene.camera
    cam.zoom = zoom
    cam.center = (0.0,) * (len(cam.center) - 2) + tuple(center)


def shot(viewer) -> np.ndarray:
    from qtpy.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()
    return viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(np.float64)


def smooth(shape, seed=0, lo=0.0, hi=1.0, cells=6):
    """A smooth random field (bicubic-ish upsampling of a coarse grid) in [lo, hi]."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, shape[0] // cells), max(2, shape[1] // cells)) + tuple(shape[2:]))
    zoom = [shape[0] / coarse.shape[0], shape[1] / coarse.shape[1]] + [1] * (len(shape) - 2)
    f = ndimage.zoom(coarse, zoom, order=3, mode="nearest")[: shape[0], : shape[1]]
    f = (f - f.min()) / (f.max() - f.min())
    return lo + f * (hi - lo)


def state(layer):
    return (layer.visible, layer.opacity, layer.blending, layer.colormap.name, tuple(layer.contrast_limits),
            layer.gamma)


def compare(viewer, layers, model, center, zoom, **kw):
    """Mean |live - native| (grey levels, RGB) with napari's linear rendering as the native one;
    checks the sources look untouched and the canvas is restored exactly on detach."""
    for ly in layers:
        ly.interpolation2d = "linear"
    look_at(viewer, center, zoom)
    native = shot(viewer)
    before = [state(ly) for ly in layers]
    names = [ly.name for ly in viewer.layers]
    live = napari_liif.attach(viewer, layers, model, tile=64, **kw)
    try:
        live.wait_idle(120)
        assert [state(ly) for ly in layers] == before
        img = shot(viewer)
    finally:
        live.detach()
    assert [ly.name for ly in viewer.layers] == names and [state(ly) for ly in layers] == before
    assert np.array_equal(shot(viewer), native)  # restored exactly
    err = np.abs(img - native)
    return float(err.mean()), float(np.percentile(err, 99.9)), native, img


def test_three_additive_uint16_channels_equal_napari_linear(viewer, bilinear):
    stack = np.stack([smooth((40, 48), seed=s, lo=100, hi=3000 + 500 * s) for s in range(3)]).astype(np.uint16)
    layers = viewer.add_image(stack, channel_axis=0, name=["c0", "c1", "c2"])
    assert [ly.blending for ly in layers][1:] == ["additive", "additive"]
    mean, p999, native, img = compare(viewer, layers, bilinear, (20.3, 23.9), 3.3)
    print(f"additive channels: mean error {mean:.3f} grey levels (99.9th percentile {p999:.1f}); "
          f"canvas mean native {native.mean():.2f}, live {img.mean():.2f}")
    assert mean < 1.0 and abs(img.mean() - native.mean()) < 0.5


@pytest.mark.parametrize("blending, opacity", [("translucent", 0.5), ("minimum", 1.0), ("multiplicative", 1.0)])
def test_blending_and_opacity_over_another_layer_equal_napari_linear(viewer, bilinear, blending, opacity):
    viewer.add_image(smooth((40, 48), seed=7, lo=30, hi=240).astype(np.uint8), colormap="cyan", name="below")
    top = viewer.add_image(smooth((40, 48), seed=8, lo=0, hi=1).astype(np.float32), colormap="magma",
                           blending=blending, opacity=opacity, name="top")
    mean, p999, native, img = compare(viewer, [top], bilinear, (19.6, 24.2), 3.7)
    print(f"{blending} at opacity {opacity}: mean error {mean:.3f} (99.9th percentile {p999:.1f})")
    assert mean < 1.0


def test_rgba_over_another_layer_equals_napari_linear(viewer, bilinear):
    viewer.add_image(smooth((40, 48), seed=3, lo=0, hi=255).astype(np.uint8), colormap="gray", name="below")
    rgba = np.concatenate([smooth((40, 48, 3), seed=4, lo=0, hi=255),
                           smooth((40, 48, 1), seed=5, lo=0, hi=255)], -1).astype(np.uint8)
    top = viewer.add_image(rgba, rgb=True, name="rgba")
    mean, p999, native, img = compare(viewer, [top], bilinear, (20.1, 24.4), 3.1)
    print(f"RGBA over a layer: mean error {mean:.3f} (99.9th percentile {p999:.1f})")
    assert mean < 1.0


def test_transparent_rgba_regions_stay_transparent_over_the_layer_beneath(viewer, bilinear):
    below = smooth((40, 48), seed=9, lo=20, hi=230).astype(np.uint8)
    viewer.add_image(below, colormap="gray", name="below")
    rgba = np.zeros((40, 48, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :20, 3] = 255  # opaque red on the left, fully transparent on the right
    top = viewer.add_image(rgba, rgb=True, name="half", visible=False)
    look_at(viewer, (20.1, 24.2), 3.0)  # no screen pixel centre exactly on the layer's edge
    shot_below = shot(viewer)
    top.visible = True
    native = shot(viewer)
    live = napari_liif.attach(viewer, top, bilinear, tile=64)
    try:
        live.wait_idle(60)
        img = shot(viewer)
    finally:
        live.detach()
    right = slice(None), slice(int(80 + (20.5 - 24.2) * 3) + 4, None)  # left of the alpha edge's blur
    assert np.abs(img[right] - native[right]).max() <= 1  # the layer beneath shows unchanged
    assert np.abs(img[right] - shot_below[right]).max() <= 1
    assert np.abs(img - native).mean() < 1.0


def test_all_channels_share_one_queue_centre_first(viewer):
    from napari_liif._qt.registry import registry
    from napari_liif.live.keys import Kind

    model = tiny_model(seed=3)
    stack = np.stack([smooth((48, 64), seed=s, lo=0, hi=4000) for s in range(3)]).astype(np.uint16)
    layers = viewer.add_image(stack, channel_axis=0)
    look_at(viewer, (24, 32), 4.0)
    live = napari_liif.attach(viewer, layers, model, tile=48, preview=False)
    order = []
    live.session.listeners.append(lambda res: res.kind is Kind.TILE and order.append(res.key))
    try:
        live.wait_idle(120)
        assert [o.visible for o in live.overlays] == [True] * 3
        n = len(live.plan.tiles)
        assert len(order) == 3 * n
        first = order[:3]  # the centre tile of every channel before any other tile
        assert sorted(k.source for k in first) == [0, 1, 2] and len({k.span for k in first}) == 1
        assert live.layers == list(layers) and len(registry.of(viewer)) == 1
    finally:
        live.detach()


def test_burst_of_100_changes_with_all_channels_live(viewer, qtbot):
    from napari_liif._qt.layer_state import read_source

    model = tiny_model(seed=3)
    stack = np.stack([smooth((64, 80), seed=s, lo=0, hi=1) for s in range(3)]).astype(np.float32)
    layers = viewer.add_image(stack, channel_axis=0)
    look_at(viewer, (30, 40), 3.0)
    live = napari_liif.attach(viewer, layers, model, tile=48, debounce_ms=20)
    rng = np.random.default_rng(0)
    try:
        for k in range(100):
            look_at(viewer, (rng.uniform(10, 54), rng.uniform(10, 70)), rng.uniform(2.0, 9.0))
            if k % 7 == 0:
                qtbot.wait(25)
        look_at(viewer, (33.3, 41.7), 4.4)
        live.wait_idle(180)
        for ly, ov in zip(layers, live.overlays):
            plan = live.plan_of(ly)
            assert plan.lattice.zoom == pytest.approx(4.4)
            prep = read_source(viewer, ly).prepare()
            fld = model.encode_source(prep.fields[0][1], prep.shape)
            for t in plan.tiles:
                want = prep.combine([fld.render(plan.region(t), t.shape)])
                assert np.abs(ov.data[plan.slot(t)] - want).max() < 1e-3, (ly.name, t)
            assert not np.isnan(ov.data).any()
        print(f"burst, 3 channels: {live.tiles_rendered} tiles rendered, {live.tiles_shown} shown")
    finally:
        live.detach()


def test_hiding_removing_and_restyling_a_source(viewer, bilinear):
    stack = np.stack([smooth((40, 48), seed=s, lo=0, hi=1) for s in range(2)]).astype(np.float32)
    a, b = viewer.add_image(stack, channel_axis=0, name=["a", "b"])
    look_at(viewer, (20, 24), 3.0)
    live = napari_liif.attach(viewer, [a, b], bilinear, tile=64)
    try:
        live.wait_idle(60)
        ova, ovb = live.overlays
        assert ova.visible and ovb.visible
        a.visible = False
        assert not ova.visible and a.visible is False  # hidden with its source, at once
        a.visible = True
        assert ova.visible
        rendered = live.tiles_rendered
        before = shot(viewer)
        b.colormap = "red"
        assert ovb.colormap.name == "red"
        after = shot(viewer)
        assert np.abs(after - before).max() > 20 and live.tiles_rendered == rendered  # restyled, not re-rendered
        viewer.layers.remove(a)
        assert ova not in viewer.layers and live.attached and live.layers == [b]
        viewer.layers.remove(b)
        assert not live.attached and ovb not in viewer.layers
    finally:
        live.detach()


def test_a_z_step_never_shows_the_previous_slice(viewer, bilinear):
    from qtpy.QtWidgets import QApplication

    vol = np.stack([np.full((40, 48), v, np.float32) for v in (0.1, 0.9)])
    vol[:, ::2] += 0.05
    layer = viewer.add_image(vol, colormap="gray", contrast_limits=(0, 1))
    viewer.dims.set_point(0, 0)
    look_at(viewer, (20, 24), 3.0)
    live = napari_liif.attach(viewer, layer, bilinear, tile=64, debounce_ms=200)
    try:
        live.wait_idle(60)
        viewer.dims.set_point(0, 1)
        QApplication.processEvents()
        img = shot(viewer)  # before the debounce has re-planned anything
        assert not live.overlay.visible
        assert img[40:80, 50:110].mean() > 200  # the bright new slice, not the dark old one
        live.wait_idle(60)
        assert live.overlay.visible and np.nanmean(live.overlay.data) > 0.85
    finally:
        live.detach()


def test_hidpi_one_sample_per_physical_pixel_equals_napari_linear():
    """Qt scale factor 2 (a fresh process: the factor is read when Qt starts)."""
    import json
    import subprocess
    from pathlib import Path

    env = dict(os.environ, QT_SCALE_FACTOR="2")
    script = Path(__file__).parent / "hidpi_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"HiDPI: {res}")
    assert res["dpr"] == 2.0 and res["canvas"] == [90, 120] and res["screenshot"] == [180, 240]
    assert res["overlay"] == [180, 240]  # one sample per physical pixel, not per logical one
    assert res["mean_error"] < 1.0


@pytest.mark.slow
def test_cells_sample_keeps_its_native_brightness_with_the_bundled_model(viewer):
    from napari_liif.samples import sample_cells

    (data, meta, _), = sample_cells()
    layers = viewer.add_image(data, **meta)
    look_at(viewer, (128.3, 127.6), 2.5)
    native = shot(viewer)
    live = napari_liif.attach(viewer, layers, None, device="cpu", precision="auto")
    try:
        live.wait_idle(300)
        img = shot(viewer)
    finally:
        live.detach()
    ratio = img.mean() / native.mean()
    per_channel = img.reshape(-1, 3).mean(0) / native.reshape(-1, 3).mean(0)
    print(f"cells sample: canvas mean native {native.mean():.2f}, live {img.mean():.2f} (ratio {ratio:.4f}; "
          f"R G B {np.round(per_channel, 4).tolist()})")
    assert abs(ratio - 1) < 0.02 and np.all(np.abs(per_channel - 1) < 0.02)


def test_16_bit_hot_pixels_auto_precision_equals_fp32_within_1_percent(viewer):
    rng = np.random.default_rng(2)
    a = (smooth((96, 96), seed=11, lo=300, hi=900) + rng.normal(0, 15, (96, 96))).astype(np.uint16)
    a[3, 90] = 65535  # a hot pixel outside the view
    layer = viewer.add_image(a, colormap="gray", contrast_limits=(300, 900))
    look_at(viewer, (48.2, 40.3), 3.0)
    out = {}
    for precision in ("auto", "fp32"):
        live = napari_liif.attach(viewer, layer, None, device="cpu", precision=precision)
        try:
            live.wait_idle(300)
            out[precision] = live.overlay.data.copy()
        finally:
            live.detach()
    err = np.abs(out["auto"] - out["fp32"]) / 600.0
    levels = len(np.unique(np.round(out["auto"])))
    print(f"16-bit with a hot pixel: auto vs fp32 max {100 * err.max():.3f} %, mean {100 * err.mean():.4f} % of "
          f"the contrast range; {levels} distinct values in view")
    assert err.max() < 0.01 and levels > 300
