"""The LIIF zoom dock widget tells the truth (Xvfb): its switch, status and list of live layers match
what runs, after a refusal, after ``attach`` from a script, after the source is removed (it does
not move on to another layer by itself), and one switch makes every channel live."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import napari  # noqa: F401
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("the widget GUI tests need a display: run them under xvfb-run -a", allow_module_level=True)

from gui_helpers import set_canvas  # noqa: E402
from helpers_models import bilinear_model  # noqa: E402

import napari_liif  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def model():
    return bilinear_model()


@pytest.fixture
def setup(make_napari_viewer, model, tmp_path):
    from napari_liif._qt import widgets
    from napari_liif.checkpoint import save_safetensors

    viewer = make_napari_viewer(show=True)
    set_canvas(viewer, 100, 120)
    # the widgets load this file through the real loader, on the render thread, with the device
    # and precision they pass (cpu; the live widget's own precision, auto)
    ckpt = save_safetensors(tmp_path / "bilinear.safetensors", model.net, model.spec)
    rng = np.random.default_rng(0)
    layers = viewer.add_image(rng.integers(0, 4000, (3, 30, 36)).astype(np.uint16), channel_axis=0,
                              name=["c0", "c1", "c2"])
    viewer.add_image(rng.random((30, 36)).astype(np.float32), name="photo")
    cam = viewer.scene.camera
    cam.zoom, cam.center = 4.0, (0.0, 15.0, 18.0)

    def make(with_file: bool = True):
        w = widgets.LiveZoomWidget(viewer)
        if with_file:
            w.options.set_checkpoint(ckpt)
            w.options.device.value = "cpu"
        viewer.window.add_dock_widget(w, name="LIIF zoom")
        return w

    return viewer, layers, make


def assert_overlay_matches_model(live, layer, model, viewer):
    """Every tile of ``layer``'s overlay equals ``model``'s engine render of it (within 1e-3)."""
    from napari_liif._qt.layer_state import read_source

    source, shape, to_data = read_source(viewer, layer).prepare()
    fld, plan = model.encode_source(source, shape), live.plan_of(layer)
    overlay = live.overlays[live.layers.index(layer)].data
    for t in plan.tiles:
        assert np.abs(overlay[plan.slot(t)] - to_data(fld.render(plan.region(t), t.shape))).max() < 1e-3, t


def live_names(viewer):
    from napari_liif._qt.registry import registry

    return [ly.name for ly in registry.layers_of(viewer)]


def test_one_switch_makes_every_channel_live(setup, model):
    viewer, layers, make = setup
    w = make()
    w.source.value = layers[1]
    w.live.value = True
    w.controller.wait_idle(60)
    assert live_names(viewer) == ["c0", "c1", "c2"]
    assert w.live_layers.value == "live: c0, c1, c2" and w.status.value == "idle"
    assert w.bar.value == w.bar.max == sum(len(w.controller.plan_of(ly).tiles) for ly in layers)
    # the file the widget names was loaded: its model (bilinear) gives every tile, independently rendered
    for ly in layers:
        assert_overlay_matches_model(w.controller, ly, model, viewer)
    w.live.value = False
    assert live_names(viewer) == [] and w.live_layers.value == "" and w.status.value == "off"
    w.channels.value = False  # just the chosen layer
    w.live.value = True
    assert live_names(viewer) == ["c1"]
    viewer.layers.selection = {viewer.layers["photo"], layers[1]}  # several selected: those
    w.channels.value = True
    w.live.value = False
    w.live.value = True
    assert live_names(viewer) == ["c1", "photo"]
    w.live.value = False


def test_attach_from_a_script_shows_in_the_widget_and_its_switch_stops_it(setup, model):
    viewer, layers, make = setup
    w = make()
    live = napari_liif.attach(viewer, layers[0], model, tile=64)
    live.wait_idle(60)
    assert w.live.value and w.controller is live and w.source.value is layers[0]
    assert w.status.value == "idle" and w.live_layers.value == "live: c0"
    w.live.value = False
    assert not live.attached and live_names(viewer) == []
    # a widget opened after the script's attach shows it as well
    live = napari_liif.attach(viewer, [layers[0], layers[2]], model, tile=64)
    w2 = make()
    assert w2.live.value and w2.controller is live and w2.live_layers.value == "live: c0, c2"
    live.detach()  # stopped by the script: every widget shows it off
    assert not w.live.value and not w2.live.value and w2.status.value == "off" and w2.controller is None


def test_a_refusal_leaves_the_switch_off_and_says_why(setup, model):
    from napari_liif._qt.model_options import FILE

    viewer, layers, make = setup
    w = make(with_file=False)
    w.source.value = viewer.layers["photo"]
    w.options.checkpoint.value = FILE  # "a file..." chosen, but no file given
    w.live.value = True
    assert not w.live.value and w.controller is None and live_names(viewer) == []
    assert "file" in w.status.value
    w.options.set_checkpoint(None)
    napari_liif.attach(viewer, layers[0], model)  # from a script: the widget follows it
    with pytest.raises(ValueError, match="layer 'c0' is live already; detach its live zoom first"):
        napari_liif.attach(viewer, layers[0], model)
    assert w.live.value and live_names(viewer) == ["c0"] and w.live_layers.value == "live: c0"
    w.live.value = False
    assert live_names(viewer) == []


def test_removing_the_source_stops_and_does_not_move_on_to_another_layer(setup):
    viewer, layers, make = setup
    w = make()
    w.channels.value = False
    w.source.value = viewer.layers["photo"]
    w.live.value = True
    w.controller.wait_idle(60)
    viewer.layers.remove(viewer.layers["photo"])
    assert not w.live.value and w.controller is None and w.status.value == "off: the layer was removed"
    assert live_names(viewer) == [] and "photo [LIIF]" not in viewer.layers
    # removing one channel of several: the others stay live, and the widget says which
    w.channels.value = True
    w.source.value = layers[0]
    w.live.value = True
    viewer.layers.remove(layers[0])
    assert w.live.value and live_names(viewer) == ["c1", "c2"] and w.live_layers.value == "live: c1, c2"
    assert "c0 [LIIF]" not in viewer.layers
    w.live.value = False


def test_the_intensity_field_reaches_live_zoom(setup):
    viewer, layers, make = setup
    w = make()
    w.channels.value = False
    w.source.value = layers[0]
    w.range.value = "100,900"
    w.live.value = True
    assert w.controller.options.limits == (100.0, 900.0)
    w.range.value = "1%,99%"
    assert w.controller.options.percentiles == (1.0, 99.0) and w.controller.options.limits is None
    w.range.value = "a lot"
    assert "intensity range must be empty (robust), LOW,HIGH or LOW%,HIGH%, got 'a lot'" in w.status.value
    w.live.value = False
    w.live.value = True  # a bad range refuses to start, saying why
    assert not w.live.value and "got 'a lot'" in w.status.value
