"""The magicgui dock widgets as napari users meet them: layer pickers that napari keeps in sync
(image layers only, never our live-zoom overlays), the shared model options (bundled models by
name or a file), progress in napari's activity dock and outcomes in napari's notifications."""

from __future__ import annotations

import time

import numpy as np
import pytest

from batch_helpers import tiny_checkpoint

pytestmark = pytest.mark.gui

TIMEOUT_MS = 30000


@pytest.fixture
def notes(monkeypatch):
    """The (severity, message) of every napari notification sent during the test."""
    from napari.utils.notifications import notification_manager

    seen = []

    def record(n):
        seen.append((str(n.severity), n.message))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def progress_bars(monkeypatch):
    """Every ``napari.utils.progress`` / ``cancelable_progress`` the widgets make, with the values
    they reported to napari (a recording subclass of napari's own, so the activity dock gets them)."""
    import napari.utils

    made = []

    def recording(base):
        class Recording(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.values, self.closed = [], False
                self.events.value.connect(lambda e: self.values.append(e.value))
                made.append(self)

            def close(self):
                self.closed = True
                super().close()

        return Recording

    monkeypatch.setattr(napari.utils, "progress", recording(napari.utils.progress))
    monkeypatch.setattr(napari.utils, "cancelable_progress", recording(napari.utils.cancelable_progress))
    return made


def _names(picker) -> list[str]:
    return [ly.name for ly in picker.choices]


@pytest.mark.parametrize("which", ["zoom", "upscale"])
def test_layer_choices_follow_the_layer_list_and_list_only_images(make_napari_viewer, which):
    from napari_liif._qt.batch_widget import UpscaleWidget
    from napari_liif._qt.widgets import LiveZoomWidget

    viewer = make_napari_viewer()
    a = viewer.add_image(np.zeros((8, 8), np.uint8), name="a")
    viewer.add_labels(np.zeros((8, 8), np.int32), name="cells")
    w = (LiveZoomWidget if which == "zoom" else UpscaleWidget)(viewer)
    assert _names(w.source) == ["a"] and w.source.value is a  # right from the start, before docking
    viewer.window.add_dock_widget(w, name="LIIF")  # napari connects the layer list to reset_choices

    viewer.add_points(np.zeros((2, 2)), name="pts")
    viewer.add_shapes(name="shapes")
    b = viewer.add_image(np.ones((8, 8), np.float32), name="b")
    overlay = viewer.add_image(np.ones((16, 16), np.float32), name="b [LIIF]",
                               metadata={"napari_liif_overlay_of": "b"})
    result = viewer.add_image(np.ones((16, 16), np.float32), name="b [LIIF x2]",
                              metadata={"napari_liif_upscaled_from": "b"})
    assert _names(w.source) == ["a", "b", "b [LIIF x2]"]  # an upscaled result is an image like any other
    w.source.value = b
    viewer.layers.remove(a)
    assert _names(w.source) == ["b", "b [LIIF x2]"] and w.source.value is b
    b.name = "renamed"
    assert w.source.current_choice == "renamed"
    viewer.layers.move(viewer.layers.index(result), 0)
    assert _names(w.source) == ["b [LIIF x2]", "renamed"]
    viewer.layers.remove(b)
    viewer.layers.remove(result)
    assert _names(w.source) == [] and w.source.value is None
    assert overlay in viewer.layers and len(viewer.layers) == 4

    viewer.window.remove_dock_widget(w)  # and the widget lets go of the layer list
    events = viewer.layers.events
    for name in ("inserted", "removed", "reordered", "renamed"):
        assert all(getattr(cb, "__self__", None) is not w and not (isinstance(cb, tuple) and cb[0]() is w)
                   for cb in getattr(events, name).callbacks), name


def test_checkpoint_picker_offers_the_bundled_models_by_name_and_a_file(make_napari_viewer, tmp_path):
    from napari_liif._qt.model_options import AUTO, FILE, ModelOptions
    from napari_liif.bundled import names

    opts = ModelOptions()
    assert list(opts.checkpoint.choices) == [AUTO, *names(), FILE]
    assert "default" in names()
    assert opts.checkpoint.value == AUTO and not opts.file.visible  # auto with no layer: the photo model
    assert opts.options() == {"checkpoint": "default", "device": "auto", "precision": "fp32", "cell": "on"}
    if "fast" in names():
        opts.set_checkpoint("fast")
        assert opts.options()["checkpoint"] == "fast"
    opts.checkpoint.value = FILE
    with pytest.raises(ValueError, match="no file is chosen: pick a .pth or .safetensors file"):
        opts.options()
    path = tmp_path / "mine.safetensors"
    opts.set_checkpoint(path)
    assert opts.checkpoint.value == FILE and opts.options()["checkpoint"] == str(path)
    opts.set_checkpoint(None)
    assert opts.checkpoint.value == AUTO
    assert ModelOptions(precision="auto").precision.value == "auto"


def test_batch_progress_reaches_napari_and_the_outcome_is_notified(make_napari_viewer, qtbot, tmp_path,
                                                                   progress_bars, notes):
    from napari_liif._qt.batch_widget import UpscaleWidget

    viewer = make_napari_viewer()
    w = UpscaleWidget(viewer)
    viewer.window.add_dock_widget(w, name="LIIF upscale")
    w.options.set_checkpoint(tiny_checkpoint(tmp_path / "tiny.safetensors", seed=5))
    w.options.device.value = "cpu"
    viewer.add_image(np.random.default_rng(0).random((3, 12, 10)).astype(np.float32), name="stack")
    w.value.value = "2"
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as done:
        assert w.run_layer() is not None, w.status.value
    assert done.args[0] == "added 'stack [LIIF x2]' (3, 24, 20) float32"
    (bar,) = progress_bars
    assert bar.desc == "LIIF upscale 'stack' x2"
    assert bar.total == 3 * 24 * 20  # output pixels of all planes
    assert bar.values[-1] == bar.n == bar.total and bar.closed
    assert w.bar.value == 1000
    assert notes[-1] == ("info", "LIIF upscale: added 'stack [LIIF x2]' (3, 24, 20) float32")

    # cancelling from napari's activity dock stops the run too (the flag is read between planes)
    viewer.add_image(np.random.default_rng(1).random((5, 16, 16)).astype(np.float32), name="z")
    w.source.value = viewer.layers["z"]
    from qtpy.QtCore import Qt

    # (what the activity dock's cancel button calls; from the worker thread, so that it is at the first plane)
    w.progressed.connect(lambda *_: w.activity.cancel(), Qt.DirectConnection)
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as done:
        w.run_layer()
    assert done.args[0].startswith("cancelled (stopped after 1 of 5 planes")
    assert "z [LIIF x2]" not in viewer.layers and progress_bars[-1].closed


def test_refusals_and_failures_reach_napari_notifications(make_napari_viewer, qtbot, tmp_path, notes):
    from napari_liif._qt.batch_widget import UpscaleWidget

    viewer = make_napari_viewer()
    w = UpscaleWidget(viewer)
    viewer.window.add_dock_widget(w, name="LIIF upscale")
    assert w.run_layer() is None
    assert notes == [("error", "LIIF upscale: no image layer to upscale: open or choose one")]
    viewer.add_image(np.zeros((8, 8), np.float32), name="img")
    w.value.value = "-3"
    assert w.run_layer() is None
    assert notes[-1] == ("error", "LIIF upscale: not started: scale must be positive and finite, got '-3'")
    w.value.value = "2"
    w.options.set_checkpoint(tmp_path / "missing.safetensors")
    w.options.device.value = "cpu"
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as done:
        assert w.run_layer() is not None
    assert done.args[0].startswith("failed: CheckpointError: ") and "missing.safetensors" in done.args[0]
    assert notes[-1] == ("error", f"LIIF upscale: {done.args[0]}")


def test_a_slow_live_view_shows_in_napari_activity_dock(make_napari_viewer, qtbot, monkeypatch, progress_bars,
                                                        notes, tmp_path):
    from gui_helpers import tiny_checkpoint

    from napari_liif._qt import attach, widgets

    ckpt = tiny_checkpoint(tmp_path / "identity.safetensors", identity=True)
    asked = []

    def slow_loader(*args):  # the real loader, two seconds slower: the first view is slow, even on a busy machine
        asked.append(args)
        time.sleep(2.0)
        return attach.model_loader(*args)

    monkeypatch.setattr(widgets, "model_loader", slow_loader)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.random.default_rng(2).random((32, 40)).astype(np.float32), name="photo")
    cam = viewer.scene.camera
    cam.zoom, cam.center = 5.0, (0.0, 16.0, 20.0)
    w = widgets.LiveZoomWidget(viewer)
    w.options.set_checkpoint(ckpt)
    w.options.device.value = "cpu"
    viewer.window.add_dock_widget(w, name="LIIF zoom")
    w.live.value = True
    live = w.controller
    live.wait_idle(60)
    assert asked == [(str(ckpt), "cpu", "auto")]  # the file, device and precision the widget shows
    qtbot.waitUntil(lambda: bool(progress_bars) and progress_bars[0].closed, timeout=5000)
    (bar,) = progress_bars
    n = len(live.plan.tiles)
    assert bar.desc == "LIIF zoom: 'photo'" and bar.total == n and bar.values[0] == 0
    assert w.status.value == "idle" and w.bar.value == n
    w.live.value = False

    # a refusal is said in the status line and in napari's notifications, and the switch goes off
    viewer.layers.clear()
    w.live.value = True
    assert w.status.value == "no image layer: open an image first" and w.live.value is False
    assert notes[-1] == ("error", "LIIF zoom: no image layer: open an image first")


def test_a_qt_binding_known_to_crash_is_named_once(make_napari_viewer, monkeypatch, notes):
    import qtpy

    from napari_liif._qt import dock
    from napari_liif._qt.batch_widget import UpscaleWidget

    assert dock.qt_binding_problem("PySide6", "6.11.3") is None
    assert dock.qt_binding_problem("PyQt5", "5.15.11") is None
    assert dock.qt_binding_problem() is None  # this environment's binding is a good one
    viewer = make_napari_viewer()
    monkeypatch.setattr(qtpy, "API_NAME", "PySide6")
    monkeypatch.setattr(qtpy, "PYSIDE_VERSION", "6.12.0")
    monkeypatch.setattr(dock, "_warned_qt", False)
    UpscaleWidget(viewer)
    UpscaleWidget(viewer)
    assert notes == [("warning", "napari-liif: PySide6 6.12.0 is known to crash long sessions (it leaks a "
                                 "reference per Signal.emit, so long sessions grow until they crash); install "
                                 "another version, e.g. pip install \"PySide6-Essentials!=6.12.0\"")]


def test_preserve_flux_in_layer_and_folder_mode(make_napari_viewer, qtbot, tmp_path, notes):
    import tifffile

    from batch_helpers import tiny_model
    from napari_liif import upscale
    from napari_liif._qt.batch_widget import UpscaleWidget

    model = tiny_model(seed=5)
    viewer = make_napari_viewer()
    w = UpscaleWidget(viewer)
    viewer.window.add_dock_widget(w, name="LIIF upscale")
    w.options.set_checkpoint(tiny_checkpoint(tmp_path / "tiny.safetensors", seed=5))
    w.options.device.value = "cpu"
    data = (np.random.default_rng(4).random((2, 12, 10)) * 1000).astype(np.float32)
    viewer.add_image(data, name="cells")
    assert w.flux.choices == ("off", "exact", "local") and w.flux.value == "off"
    w.flux.value = "exact"
    w.value.value = "0.5"
    assert w.run_layer() is None  # refused before anything runs
    assert notes[-1] == ("error", "LIIF upscale: not started: preserve_flux needs a scale of at least 1; "
                                  "got 6 output rows for 12 input ones")
    w.value.value = "2"
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as done:
        assert w.run_layer() is not None, w.status.value
    assert done.args[0] == "added 'cells [LIIF x2]' (2, 24, 20) float32"
    out = viewer.layers["cells [LIIF x2]"].data
    assert np.array_equal(out, upscale(data, scale=2, model=model, preserve_flux=True))
    block_means = out.reshape(2, 12, 2, 10, 2).mean(axis=(2, 4), dtype=np.float64)
    assert np.abs(block_means - data).max() < 1e-3  # every input pixel's flux kept (float32 rounding)
    assert not np.array_equal(out, upscale(data, scale=2, model=model))

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", data[0])
    w.folder_in.value, w.folder_out.value = src, dst
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as done:
        assert w.run_folder() is not None, w.status.value
    assert done.args[0].startswith("1 upscaled, 0 skipped")
    assert np.array_equal(tifffile.imread(dst / "a.tif"), upscale(data[0], scale=2, model=model, preserve_flux=True))
    w.flux.value, w.folder_out.value = "local", tmp_path / "local"  # local means: what upscale() gives
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as done:
        assert w.run_folder() is not None, w.status.value
    local = tifffile.imread(tmp_path / "local" / "a.tif")
    assert np.array_equal(local, upscale(data[0], scale=2, model=model, preserve_flux="local"))
    assert not np.array_equal(local, tifffile.imread(dst / "a.tif"))
