"""Live LIIF zoom in a shown napari viewer (run under Xvfb): alignment, staleness, cleanup,
slices, dtypes, messages, the dock widget and the quality target against napari's interpolations."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

import napari  # noqa: F401
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("the live-zoom GUI tests need a display: run them under xvfb-run -a", allow_module_level=True)

from gui_helpers import bilinear_at, psnr, screen_coords, screenshot_gray, set_canvas, tiny_model  # noqa: E402

import napari_liif  # noqa: E402

pytestmark = pytest.mark.gui

NAPARI_INTERPOLATIONS = ("nearest", "linear", "cubic", "lanczos", "spline36")


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    set_canvas(v, 160, 200)
    return v


@pytest.fixture(scope="module")
def identity():
    return tiny_model(identity=True)


@pytest.fixture(scope="module")
def detail():
    return tiny_model(identity=False, seed=3)


def look_at(viewer, center, zoom):
    cam = viewer.scene.camera
    cam.zoom = zoom
    cam.center = (0.0,) * (len(cam.center) - 2) + tuple(center)


def engine_tiles(model, viewer, layer, plan):
    """What the engine gives for each tile of ``plan``, computed without the controller."""
    from napari_liif._qt.layer_state import read_source

    source, shape, to_data = read_source(viewer, layer).prepare()
    fld = model.encode_source(source, shape)
    return [(t, to_data(fld.render(plan.region(t), t.shape))) for t in plan.tiles]


def connections_to(obj, *groups) -> list[str]:
    """Names of the events in ``groups`` that still call a method of ``obj``."""
    found = []
    for group in groups:
        for name, emitter in group.emitters.items():
            for cb in emitter.callbacks:
                target = cb[0]() if isinstance(cb, tuple) and callable(cb[0]) else getattr(cb, "__self__", None)
                if target is obj:
                    found.append(name)
    return found


def smooth_random(shape, seed=0, dtype=np.uint8, lo=0, hi=255):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    return (lo + a * (hi - lo)).astype(dtype)


# -- alignment -----------------------------------------------------------------------------

ALIGNMENT_VIEWS = [((20.0, 25.0), 4.0), ((7.3, 41.8), 6.37), ((31.6, 3.2), 2.5), ((19.5, 24.5), 11.0)]


def test_overlay_is_pixel_aligned_with_the_source(viewer, identity):
    """With a model that equals bilinear interpolation, every canvas pixel shows the source
    interpolated exactly at that pixel's centre, at several zooms and centres (one controller,
    re-planned for each view); a one-screen-pixel shift is far worse."""
    img = smooth_random((40, 50), seed=1)
    layer = viewer.add_image(img, colormap="gray", contrast_limits=(0, 255))
    look_at(viewer, *ALIGNMENT_VIEWS[0])
    live = napari_liif.attach(viewer, layer, identity, tile=64)
    try:
        for center, zoom in ALIGNMENT_VIEWS:
            look_at(viewer, center, zoom)
            live.wait_idle(60)
            shot = screenshot_gray(viewer)
            ys, xs = screen_coords(viewer)
            inside = (ys >= -0.5) & (ys < 39.5) & (xs >= -0.5) & (xs < 49.5)
            inside &= (np.abs(ys - np.round(ys)) != 0.5) & (np.abs(xs - np.round(xs)) != 0.5)
            err = np.abs(shot - bilinear_at(img.astype(float), ys, xs))[inside]
            shifted = [np.abs(shot - bilinear_at(img.astype(float), ys + dy / zoom, xs + dx / zoom))[inside].mean()
                       for dy, dx in ((1, 0), (0, 1), (-1, 0), (0, -1))]
            print(f"alignment zoom {zoom} centre {center}: mean |err| {err.mean():.3f}, max {err.max():.2f} "
                  f"gray levels; shifted by one screen pixel: {min(shifted):.2f}")
            assert err.max() <= 1.5
            assert err.mean() <= 0.5
            assert min(shifted) > 10 * err.mean()
    finally:
        live.detach()


def assert_overlay_matches_engine(live, model, viewer, layer):
    """Every tile of the current view equals an independent engine render; no hole is left."""
    plan = live.plan
    for t, want in engine_tiles(model, viewer, layer, plan):
        assert np.abs(live.overlay.data[plan.slot(t)] - want).max() < 1e-3, t
    assert not np.isnan(live.overlay.data).any()


def test_overlay_data_equals_engine_render_of_each_tile(viewer, detail):
    img = smooth_random((48, 64), seed=2)
    layer = viewer.add_image(img, colormap="gray")
    look_at(viewer, (24.4, 30.9), 5.3)
    live = napari_liif.attach(viewer, layer, detail, tile=48)
    try:
        live.wait_idle(60)
        assert_overlay_matches_engine(live, detail, viewer, layer)
        assert live.overlay.scale[-1] == pytest.approx(1 / 5.3)
    finally:
        live.detach()


def test_previews_cover_the_view_first_then_full_tiles_replace_them(viewer, detail):
    """With previews forced on (the tiny model would skip them as too fast to need one), the
    view is covered before it is complete, and the final overlay holds full tiles only."""
    img = smooth_random((48, 64), seed=6)
    layer = viewer.add_image(img, colormap="gray")
    look_at(viewer, (24.4, 30.9), 5.3)
    live = napari_liif.attach(viewer, layer, detail, tile=32)
    from napari_liif.live.keys import Kind

    live.session.renderer.preview_min_s = 0.0
    seen = []
    live.session.listeners.append(lambda res: res.kind is Kind.PREVIEW and seen.append(res.key))
    try:
        live.wait_idle(60)
        seen.clear()
        look_at(viewer, (24.4, 31.9), 5.3)  # a new lattice: every tile is new
        live.wait_idle(60)
        assert len(seen) == len(live.plan.tiles) - 1  # every tile but the centre one
        assert live.covered_time is not None and live.covered_time <= live.last_tile_time
        assert_overlay_matches_engine(live, detail, viewer, layer)
    finally:
        live.detach()


# -- camera bursts and tile reuse ----------------------------------------------------------

def camera_burst(viewer, qtbot, n: int = 100) -> None:
    """``n`` random camera changes over a 64 x 80 image, some renders let start so that they
    must be abandoned, ending on centre (33.3, 41.7) at zoom 4.4."""
    rng = np.random.default_rng(0)
    for k in range(n):
        look_at(viewer, (rng.uniform(10, 54), rng.uniform(10, 70)), rng.uniform(2.0, 9.0))
        if k % 7 == 0:
            qtbot.wait(25)
    look_at(viewer, (33.3, 41.7), 4.4)


def test_burst_of_100_camera_changes_ends_correct_with_no_stale_tile(viewer, detail, qtbot):
    img = smooth_random((64, 80), seed=4)
    layer = viewer.add_image(img, colormap="gray")
    look_at(viewer, (30, 40), 3.0)
    live = napari_liif.attach(viewer, layer, detail, tile=48, debounce_ms=20)
    try:
        camera_burst(viewer, qtbot)
        live.wait_idle(120)
        plan = live.plan
        assert plan.lattice.zoom == pytest.approx(4.4)
        assert_overlay_matches_engine(live, detail, viewer, layer)
        assert live.overlay.translate[-2:] == pytest.approx(plan.translate)
        print(f"burst: {live.tiles_rendered} tiles rendered, {live.tiles_shown} pasted, "
              f"final view {len(plan.tiles)} tiles")
    finally:
        live.detach()


def test_whole_pixel_pan_reuses_tiles_and_subpixel_pan_does_not(viewer, detail):
    img = smooth_random((64, 80), seed=5)
    layer = viewer.add_image(img, colormap="gray")
    look_at(viewer, (30, 40), 4.0)
    live = napari_liif.attach(viewer, layer, detail, tile=32)
    try:
        live.wait_idle(60)
        n0, first = live.tiles_rendered, set(live.plan.tiles)
        look_at(viewer, (30 + 40 / 4.0, 40 - 24 / 4.0), 4.0)  # 40 and 24 screen pixels
        live.wait_idle(60)
        new = [t for t in live.plan.tiles if t not in first]
        assert live.tiles_rendered - n0 == len(new) < len(live.plan.tiles)
        n1 = live.tiles_rendered
        look_at(viewer, (30.1, 40), 4.0)  # 0.4 screen pixel: a new lattice
        live.wait_idle(60)
        assert live.tiles_rendered - n1 == len(live.plan.tiles)
    finally:
        live.detach()


# -- cleanup ---------------------------------------------------------------------------------

def _all_groups(viewer, layer):
    return (viewer.scene.camera.events, viewer.canvas.events, viewer.dims.events, viewer.layers.events,
            layer.events)


def test_detach_leaves_no_layer_connection_or_thread(viewer, detail):
    layer = viewer.add_image(smooth_random((32, 32)), colormap="gray")
    look_at(viewer, (16, 16), 5.0)
    live = napari_liif.attach(viewer, layer, detail, tile=32)
    live.wait_idle(60)
    assert connections_to(live, *_all_groups(viewer, layer))
    live.detach()
    assert [ly.name for ly in viewer.layers] == [layer.name]
    assert connections_to(live, *_all_groups(viewer, layer)) == []
    assert not live.thread_alive
    look_at(viewer, (10, 10), 7.0)  # nothing reacts any more
    assert [ly.name for ly in viewer.layers] == [layer.name]
    live.detach()  # idempotent


def test_removing_the_source_layer_detaches(viewer, detail):
    layer = viewer.add_image(smooth_random((32, 32)), colormap="gray")
    look_at(viewer, (16, 16), 5.0)
    live = napari_liif.attach(viewer, layer, detail, tile=32)
    live.wait_idle(60)
    viewer.layers.remove(layer)
    assert not live.attached
    assert len(viewer.layers) == 0
    assert connections_to(live, *_all_groups(viewer, layer)) == []
    assert not live.thread_alive


# -- slices, dtypes, colour ------------------------------------------------------------------

def test_z_slice_change_rerenders_the_new_plane(viewer, identity):
    stack = np.stack([smooth_random((30, 40), seed=s) for s in range(3)])
    layer = viewer.add_image(stack, colormap="gray", contrast_limits=(0, 255))
    viewer.dims.current_step = (0,) + tuple(viewer.dims.current_step[1:])
    look_at(viewer, (15, 20), 5.0)
    live = napari_liif.attach(viewer, layer, identity, tile=64)
    try:
        live.wait_idle(60)
        ys, xs = screen_coords(viewer)
        inside = (ys >= -0.5) & (ys < 29.5) & (xs >= -0.5) & (xs < 39.5)
        for z in (2, 1):
            viewer.dims.current_step = (z,) + tuple(viewer.dims.current_step[1:])
            live.wait_idle(60)
            shot = screenshot_gray(viewer)
            own = np.abs(shot - bilinear_at(stack[z].astype(float), ys, xs))[inside].mean()
            other = np.abs(shot - bilinear_at(stack[0].astype(float), ys, xs))[inside].mean()
            print(f"slice {z}: mean |err| {own:.3f} vs slice 0: {other:.1f}")
            assert own < 0.5 < 20 < other
    finally:
        live.detach()


def test_uint16_layer_with_contrast_limits(viewer, identity):
    img = smooth_random((36, 44), seed=6, dtype=np.uint16, lo=1000, hi=50000)
    layer = viewer.add_image(img, colormap="gray", contrast_limits=(5000, 40000))
    look_at(viewer, (18, 22), 4.5)
    live = napari_liif.attach(viewer, layer, identity, tile=64)
    try:
        live.wait_idle(60)
        ys, xs = screen_coords(viewer)
        inside = (ys >= -0.5) & (ys < 35.5) & (xs >= -0.5) & (xs < 43.5)
        data = bilinear_at(img.astype(float), ys, xs)
        ov = live.overlay
        assert ov.data.dtype == np.float32
        plan = live.plan
        rows, cols = np.mgrid[plan.rows[0]:plan.rows[1], plan.cols[0]:plan.cols[1]]
        want = bilinear_at(img.astype(float), plan.lattice.sample_world(0, rows), plan.lattice.sample_world(1, cols))
        rel = np.nanmax(np.abs(ov.data - want)) / 49000
        assert rel < 1e-5  # the overlay holds data units (uint16 range kept, float32)
        for clim in ((5000, 40000), (0, 65535)):
            layer.contrast_limits = clim
            assert tuple(ov.contrast_limits) == clim
            shot = screenshot_gray(viewer)
            disp = np.clip((data - clim[0]) / (clim[1] - clim[0]), 0, 1) * 255
            err = np.abs(shot - disp)[inside]
            print(f"uint16 clim {clim}: mean |err| {err.mean():.3f}, max {err.max():.2f} gray levels")
            assert err.mean() < 0.6 and err.max() <= 2.0
    finally:
        live.detach()


def test_float_grayscale_layer_with_colormap_and_gamma(viewer, identity):
    img = smooth_random((30, 30), seed=7, dtype=np.float32, lo=-2.0, hi=3.0)
    layer = viewer.add_image(img, colormap="magma", gamma=0.7, opacity=0.9, blending="additive")
    look_at(viewer, (15, 15), 4.0)
    live = napari_liif.attach(viewer, layer, identity, tile=64)
    try:
        live.wait_idle(60)
        ov = live.overlay
        assert ov.colormap.name == layer.colormap.name
        assert (ov.gamma, ov.opacity, ov.blending) == (0.7, pytest.approx(0.9), "additive")
        assert tuple(ov.contrast_limits) == tuple(layer.contrast_limits)
        plan = live.plan
        rows, cols = np.mgrid[plan.rows[0]:plan.rows[1], plan.cols[0]:plan.cols[1]]
        want = bilinear_at(img.astype(float), plan.lattice.sample_world(0, rows), plan.lattice.sample_world(1, cols))
        assert np.abs(ov.data - want).max() < 1e-5 * 5
        layer.colormap = "viridis"
        assert ov.colormap.name == "viridis"
    finally:
        live.detach()


def test_rgb_layer_renders_colour_aligned(viewer, identity):
    img = smooth_random((30, 40, 3), seed=8)
    layer = viewer.add_image(img, rgb=True)
    look_at(viewer, (15, 20), 5.0)
    live = napari_liif.attach(viewer, layer, identity, tile=64)
    try:
        live.wait_idle(60)
        shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
        ys, xs = screen_coords(viewer)
        inside = (ys >= -0.5) & (ys < 29.5) & (xs >= -0.5) & (xs < 39.5)
        for c in range(3):
            err = np.abs(shot[..., c] - bilinear_at(img[..., c].astype(float), ys, xs))[inside]
            assert err.mean() < 0.5 and err.max() <= 1.5, c
    finally:
        live.detach()


def test_scaled_and_translated_layer_aligns(viewer, identity):
    img = smooth_random((30, 40), seed=9)
    layer = viewer.add_image(img, colormap="gray", contrast_limits=(0, 255), scale=(0.5, 0.8), translate=(3, -2))
    look_at(viewer, (10.2, 13.1), 9.0)
    live = napari_liif.attach(viewer, layer, identity, tile=64)
    try:
        live.wait_idle(60)
        shot = screenshot_gray(viewer)
        ys, xs = screen_coords(viewer, (0.5, 0.8), (3, -2))
        inside = (ys >= -0.5) & (ys < 29.5) & (xs >= -0.5) & (xs < 39.5)
        err = np.abs(shot - bilinear_at(img.astype(float), ys, xs))[inside]
        assert err.mean() < 0.5 and err.max() <= 1.5
    finally:
        live.detach()


def test_8192_uint16_layer_encodes_only_what_is_visible(viewer, detail):
    img = np.zeros((8192, 8192), np.uint16)
    img[::7] = 40000
    img[:, ::5] += 2000
    layer = viewer.add_image(img, colormap="gray")
    look_at(viewer, (6000.3, 1234.7), 4.0)  # 40 x 50 pixels of the image on screen
    live = napari_liif.attach(viewer, layer, detail, tile=64)
    try:
        live.wait_idle(120)
        deadline = time.monotonic() + 60
        while not live.session.renderer.plane_encoded:  # the idle pass, around the view
            assert time.monotonic() < deadline
            time.sleep(0.01)
        print(f"8192^2 uint16: {live.encoded_tiles} encoder tiles of 32^2 encoded (of 65536), "
              f"{live.encoded_pixels} input pixels through the encoder")
        # 40 x 50 pixels on screen; the idle pass adds one view's size on each side (the plane's
        # latents exceed half the cache): 122 x 152 latents, at most 5 x 6 tiles of 32 x 32, after
        # the view's own (as far as it reaches, then whole): at most 3 x 3 and the centre tile's 2 x 2
        assert 1 <= live.encoded_tiles <= 30 + 9 + 4
        assert live.encoded_pixels < 8192 * 8192 / 1000
        plan = live.plan
        for t, want in engine_tiles(detail, viewer, layer, plan)[:2]:
            assert np.abs(live.overlay.data[plan.slot(t)] - want).max() < 0.05  # uint16 units
    finally:
        live.detach()


# -- messages ------------------------------------------------------------------------------

def test_labels_3d_and_zoomed_out_get_messages(viewer, identity):
    labels = viewer.add_labels(np.zeros((20, 20), np.int32))
    with pytest.raises(TypeError, match="Labels layer"):
        napari_liif.attach(viewer, labels, identity)
    viewer.layers.remove(labels)
    layer = viewer.add_image(np.stack([smooth_random((20, 20))] * 2), colormap="gray")
    look_at(viewer, (10, 10), 0.8)
    live = napari_liif.attach(viewer, layer, identity, tile=64)
    try:
        live.wait_idle(30)
        assert "zoom in" in live.message and not live.overlay.visible
        look_at(viewer, (10, 10), 5.0)
        live.wait_idle(30)
        assert live.message == "idle" and live.overlay.visible
        viewer.dims.ndisplay = 3
        live.wait_idle(30)
        assert "2D view" in live.message and not live.overlay.visible
        viewer.dims.ndisplay = 2
        look_at(viewer, (10, 10), 5.0)
        live.wait_idle(30)
        assert live.message == "idle" and live.overlay.visible
        viewer.canvas.grid.enabled = True
        live.wait_idle(30)
        assert "grid mode" in live.message and not live.overlay.visible
        viewer.canvas.grid.enabled = False
        live.wait_idle(30)
        assert live.message == "idle" and live.overlay.visible
        # the overlay follows its source when layers are reordered
        viewer.add_image(np.zeros((5, 5)), name="other")
        viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
        live.wait_idle(30)
        assert viewer.layers.index(live.overlay) == viewer.layers.index(layer) + 1
    finally:
        live.detach()


def test_unreadable_checkpoint_is_reported_not_raised_in_the_thread(viewer, tmp_path):
    bad = tmp_path / "nothing.safetensors"
    layer = viewer.add_image(smooth_random((20, 20)), colormap="gray")
    look_at(viewer, (10, 10), 5.0)
    live = napari_liif.attach(viewer, layer, bad, device="cpu")
    try:
        with pytest.raises(RuntimeError, match="nothing.safetensors: no such file"):
            live.wait_idle(30)
        assert live.message.startswith("error: CheckpointError")
        assert live.thread_alive  # the thread survives and serves the next request
    finally:
        live.detach()
    assert not live.thread_alive


# -- the dock widget ---------------------------------------------------------------------------

def test_dock_widget_runs_live_zoom_and_cleans_up(viewer, identity, tmp_path):
    from gui_helpers import tiny_checkpoint

    from napari_liif._qt import widgets

    ckpt = tiny_checkpoint(tmp_path / "identity.safetensors", identity=True)  # the weights of `identity`
    img = smooth_random((32, 40), seed=10)
    layer = viewer.add_image(img, colormap="gray", name="photo")
    look_at(viewer, (16, 20), 5.0)
    w = widgets.LiveZoomWidget(viewer)
    w.options.set_checkpoint(ckpt)  # loaded by the real loader on the render thread, as a user's file
    w.options.device.value = "cpu"
    viewer.window.add_dock_widget(w, name="LIIF zoom")
    assert w.source.value is viewer.layers["photo"]
    w.live.value = True
    live = w.controller
    live.wait_idle(60)
    assert w.status.value == "idle"
    assert_overlay_matches_engine(live, identity, viewer, layer)  # the file's model, at the widget's precision
    assert w.bar.value == w.bar.max == len(live.plan.tiles)
    assert "photo [LIIF]" in viewer.layers
    assert [ly.name for ly in w.source.choices] == ["photo"]  # the overlay is not offered as a source
    encoded = live.encoded_tiles
    w.options.cell.value = "clamp"
    assert live.cell == "clamp"
    live.wait_idle(60)
    assert live.encoded_tiles == encoded  # a cell change re-renders without re-encoding
    w.live.value = False
    assert "photo [LIIF]" not in viewer.layers and not live.attached
    w.live.value = True
    live = w.controller
    live.wait_idle(60)
    viewer.window.remove_dock_widget(w)
    assert not live.attached and "photo [LIIF]" not in viewer.layers
    assert connections_to(w, viewer.layers.events) == []


# -- napari-liif view ----------------------------------------------------------------------------

def test_view_opens_the_sample_with_live_zoom_on(tmp_path, identity, qtbot):
    from napari_liif._qt.view import START_ZOOM, open_viewer
    from napari_liif.checkpoint import save_safetensors

    path = save_safetensors(tmp_path / "tiny.safetensors", identity.net, identity.spec)
    viewer, widget = open_viewer(None, checkpoint=path, device="cpu")
    try:
        live = widget.controller
        assert live is not None and widget.live.value
        assert viewer.layers[0].data.shape == (400, 600, 3)  # the bundled sample photograph
        live.wait_idle(120)
        assert viewer.scene.camera.zoom == START_ZOOM
        assert live.overlay.visible and live.message == "idle"
        assert widget.options.checkpoint_value == str(path)
    finally:
        widget.shutdown()
        viewer.close()
    with pytest.raises(ValueError, match="cell"):
        open_viewer(None, checkpoint=path, device="cpu", cell="sometimes", show=False)


# -- the quality target ------------------------------------------------------------------------

def test_liif_beats_every_napari_interpolation_at_zoom_4(make_napari_viewer):
    """A 4x-downsampled photograph (skimage camera, held out from training) at zoom 4: the canvas
    with the LIIF overlay is closer to the full-resolution photograph than napari's own rendering
    with any of its interpolations."""
    import torch
    from skimage import data as skdata

    from napari_liif.engine import load_model
    from napari_liif.train.patches import downsample

    hr = skdata.camera()  # 512 x 512 uint8
    lr = downsample(torch.from_numpy(hr / 255.0).float()[None].expand(3, -1, -1), (128, 128))[0].numpy()
    lr = np.round(lr * 255).astype(np.uint8)
    viewer = make_napari_viewer(show=True)
    set_canvas(viewer, 192, 192)
    layer = viewer.add_image(lr, colormap="gray", contrast_limits=(0, 255))
    look_at(viewer, (63.5, 63.5), 4.0)  # screen pixel (i, j) is high-resolution pixel (160 + i, 160 + j)
    truth = hr[160:352, 160:352].astype(float)
    scores = {}
    for mode in NAPARI_INTERPOLATIONS:
        layer.interpolation2d = mode
        scores[mode] = psnr(screenshot_gray(viewer), truth)
    layer.interpolation2d = "nearest"
    model = load_model(None, device="cpu")
    t0 = time.perf_counter()
    live = napari_liif.attach(viewer, layer, model, tile=96)
    try:
        live.wait_idle(240)
        scores["LIIF"] = psnr(screenshot_gray(viewer), truth)
    finally:
        live.detach()
    print("PSNR (dB) vs full resolution at zoom 4: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items())
          + f"; LIIF view rendered in {time.perf_counter() - t0:.1f} s")
    best = max(v for k, v in scores.items() if k != "LIIF")
    assert scores["LIIF"] > best
