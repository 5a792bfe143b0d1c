"""The "LIIF upscale" widget: stacks across z/t, dtype and colour, the world-coordinate
overlay, cancel mid-stack, folder mode (resumable, per-file failures), bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from batch_helpers import tiny_checkpoint, tiny_model
from napari_liif.api import upscale

pytestmark = pytest.mark.gui

TIMEOUT_MS = 30000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", seed=11)


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=11)


@pytest.fixture
def widget(upscale_widget, ckpt):
    return upscale_widget(str(ckpt))


def _run(qtbot, w, layer_name: str, value: str = "2", mode: str = "scale") -> str:
    w.source.value = w.viewer.layers[layer_name]
    w.mode.value = mode
    w.value.value = value
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as blocker:
        assert w.run_layer() is not None, w.status.value
    return blocker.args[0]


def test_stack_across_t_and_z_slice_by_slice(qtbot, widget, model):
    rng = np.random.default_rng(0)
    data = rng.integers(100, 60000, (2, 3, 12, 10)).astype(np.uint16)  # t, z, y, x
    widget.viewer.add_image(data, name="stack", scale=(1, 2, 0.5, 0.5))
    msg = _run(qtbot, widget, "stack", "2")
    out = widget.viewer.layers["stack [LIIF x2]"]
    assert "added" in msg
    assert out.data.dtype == np.uint16 and out.data.shape == (2, 3, 24, 20)
    # every (t, z) plane, with one intensity map for the whole stack, equals the in-memory upscale
    assert np.array_equal(out.data, upscale(data, scale=2, model=model))
    assert np.allclose(out.scale, (1, 2, 0.25, 0.25))

    # display z and x instead: now y and t are the stack axes
    widget.viewer.dims.order = (0, 2, 1, 3)
    msg = _run(qtbot, widget, "stack", "3,2")
    out = widget.viewer.layers["stack [LIIF x3,2]"]
    expected = np.moveaxis(upscale(np.moveaxis(data, [1, 3], [-2, -1]), scale=(3, 2), model=model),
                           [-2, -1], [1, 3])
    assert out.data.shape == (2, 9, 12, 20)
    assert np.array_equal(out.data, expected)


def test_dtype_colour_and_channel_properties_are_kept(qtbot, widget, model):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)
    widget.viewer.add_image(rgb, name="photo", rgb=True)
    _run(qtbot, widget, "photo", "2")
    out = widget.viewer.layers["photo [LIIF x2]"]
    assert out.rgb and out.data.dtype == np.uint8
    assert np.array_equal(out.data, upscale(rgb, scale=2, model=model, rgb=True))

    chans = rng.random((2, 10, 8)).astype(np.float32) * 1000
    widget.viewer.add_image(chans, channel_axis=0, name=["dapi", "gfp"], colormap=["blue", "green"],
                            contrast_limits=[[0, 900], [10, 500]])
    _run(qtbot, widget, "gfp", "16,24", mode="target shape")
    out = widget.viewer.layers["gfp [LIIF 16x24]"]
    assert out.data.dtype == np.float32 and out.data.shape == (16, 24)
    assert out.colormap.name == "green"
    assert tuple(out.contrast_limits) == (10, 500)
    ref = upscale(chans[1], size=(16, 24), model=model)
    assert float(np.max(np.abs(out.data - ref))) < 1e-4


def test_output_overlays_source_in_world_coordinates(qtbot, widget):
    data = np.arange(12 * 10, dtype=np.float32).reshape(12, 10)
    src = widget.viewer.add_image(data, name="src", scale=(2.0, 0.5), translate=(10.0, -3.0), rotate=30)
    _run(qtbot, widget, "src", "2.5")
    out = widget.viewer.layers["src [LIIF x2.5]"]
    assert out.data.shape == (30, 25)
    r = np.array([12 / 30, 10 / 25])
    for j in [(0, 0), (7, 3), (29, 24)]:
        # output pixel j is centred at input data coordinate (j + 0.5) r - 0.5
        want = src.data_to_world((np.array(j) + 0.5) * r - 0.5)
        assert np.allclose(out.data_to_world(j), want, atol=1e-9)
    # and the outer pixel edges coincide
    assert np.allclose(out.data_to_world((-0.5, -0.5)), src.data_to_world((-0.5, -0.5)), atol=1e-9)
    assert np.allclose(out.data_to_world((29.5, 24.5)), src.data_to_world((11.5, 9.5)), atol=1e-9)


def test_cancel_mid_stack_adds_no_layer(qtbot, widget):
    from qtpy.QtCore import Qt

    data = np.random.default_rng(2).random((6, 16, 16)).astype(np.float32)
    widget.viewer.add_image(data, name="zstack")
    # cancel from the worker thread as soon as the first plane reports progress
    widget.progressed.connect(lambda done, total: widget.request_cancel(), Qt.DirectConnection)
    msg = _run(qtbot, widget, "zstack", "2")
    assert "cancelled" in msg and "stopped after 1 of 6 planes" in msg
    assert [ly.name for ly in widget.viewer.layers] == ["zstack"]
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_folder_mode_resumes_and_reports_failures(qtbot, widget, model, tmp_path):
    import tifffile

    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(3)
    images = {f"img{k}.tif": rng.integers(0, 4000, (10 + k, 12)).astype(np.uint16) for k in range(3)}
    for name, a in images.items():
        tifffile.imwrite(src / name, a)
    (src / "broken.tif").write_bytes(b"not a tiff at all")
    np.save(src / "empty.npy", np.zeros((0, 5), np.uint8))
    widget.folder_in.value = src
    widget.folder_out.value = dst
    widget.value.value = "2"

    def run():
        with qtbot.waitSignal(widget.finished_job, timeout=TIMEOUT_MS) as blocker:
            assert widget.run_folder() is not None, widget.status.value
        return blocker.args[0], widget.last_report

    msg, report = run()
    assert msg.startswith("3 upscaled, 0 skipped (output exists), 2 failed")
    failed = {p.name: why for p, why in report.failed}
    assert set(failed) == {"broken.tif", "empty.npy"}
    assert "not a TIFF" in failed["broken.tif"] and "empty" in failed["empty.npy"]
    assert "failed: " in widget.report.value
    for name, a in images.items():
        assert np.array_equal(tifffile.imread(dst / name), upscale(a, scale=2, model=model))

    (dst / "img1.tif").unlink()
    msg, report = run()
    assert msg.startswith("1 upscaled, 2 skipped (output exists), 2 failed")
    assert [p.name for p in report.done] == ["img1.tif"]


@pytest.mark.parametrize("value, words", [
    ("0", "positive"), ("-2", "positive"), ("abc", "numbers"), ("2,3,4", "one number or two"),
    ("1e9", "GiB"), ("inf", "finite"),
])
def test_bad_scales_are_refused_before_anything_runs(widget, value, words):
    widget.viewer.add_image(np.zeros((8, 8), np.float32), name="img")
    widget.source.value = widget.viewer.layers["img"]
    widget.value.value = value
    assert widget.run_layer() is None
    assert not widget.running
    assert words in widget.status.value and widget.status.value.startswith("not started")
    assert len(widget.viewer.layers) == 1


def test_labels_are_not_offered_and_bad_shapes_are_refused(widget):
    from napari_liif._qt.batch_widget import plan_layer

    cells = widget.viewer.add_labels(np.zeros((8, 8), np.int32), name="cells")
    assert widget.source.choices == ()  # a labels layer is no source
    assert widget.run_layer() is None
    assert widget.status.value == "no image layer to upscale: open or choose one"
    with pytest.raises(TypeError, match="'cells' is a labels layer"):
        plan_layer(cells, (0, 1), 2, scale=(2, 2))
    widget.viewer.add_image(np.zeros((8, 8), np.uint8), name="img")
    assert [ly.name for ly in widget.source.choices] == ["img"]
    widget.mode.value = "target shape"
    widget.value.value = "16.5,20"
    assert widget.run_layer() is None
    assert "whole numbers" in widget.status.value
    assert len(widget.viewer.layers) == 2
