"""The batch widget keeps channels apart: a ZCYX layer (channel axis labelled, or chosen) and a
folder of hyperstacks give each channel exactly what that channel upscaled alone gives."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from batch_helpers import hyperstack, tiny_checkpoint, tiny_model, write_hyperstack
from napari_liif.api import upscale

pytestmark = pytest.mark.gui

TIMEOUT_MS = 30000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", seed=11)


@pytest.fixture(scope="module")
def alone():
    """Each channel of the hyperstack upscaled alone: the reference."""
    a, m = hyperstack(), tiny_model(seed=11)
    return np.stack([upscale(a[:, c], scale=2, model=m) for c in range(a.shape[1])], axis=1)


@pytest.fixture
def widget(upscale_widget, ckpt):
    return upscale_widget(str(ckpt))


def _run_layer(qtbot, w, name: str) -> str:
    w.source.value = w.viewer.layers[name]
    w.value.value = "2"
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as blocker:
        assert w.run_layer() is not None, w.status.value
    return blocker.args[0]


@pytest.mark.parametrize("labelled", [True, False], ids=["axis-labels", "chosen"])
def test_zcyx_layer_each_channel_as_alone(qtbot, widget, alone, labelled):
    a = hyperstack()
    kw = {"axis_labels": ("z", "c", "y", "x")} if labelled else {}
    widget.viewer.add_image(a, name="hs", **kw)
    if not labelled:
        widget.channels.value = "1"
    msg = _run_layer(qtbot, widget, "hs")
    out = widget.viewer.layers["hs [LIIF x2]"].data
    assert "added" in msg, msg
    assert np.array_equal(out, alone)


def test_lazy_zcyx_layer_each_channel_as_alone(qtbot, widget, alone):
    import dask.array as da
    widget.viewer.add_image(da.from_array(hyperstack(), chunks=(1, 1, 8, 9)), name="lazy",
                            axis_labels=("z", "c", "y", "x"))
    msg = _run_layer(qtbot, widget, "lazy")
    assert "lazy" in msg, msg
    out = widget.viewer.layers["lazy [LIIF x2]"].data
    out = out[0] if isinstance(out, list) or widget.viewer.layers["lazy [LIIF x2]"].multiscale else out
    assert np.array_equal(np.asarray(out), alone)


def test_a_displayed_axis_is_refused_as_channels(widget):
    widget.viewer.add_image(hyperstack(), name="hs")
    widget.source.value = widget.viewer.layers["hs"]
    widget.channels.value = "3"
    assert widget.run_layer() is None
    assert "channel axis 3" in widget.status.value and "displayed" in widget.status.value
    widget.channels.value = "two"
    assert widget.run_layer() is None
    assert "channel axis must be empty (auto), none or an axis number, got 'two'" in widget.status.value


def test_folder_of_hyperstacks_each_channel_as_alone(qtbot, widget, alone, tmp_path, input_guard):
    src = tmp_path / "in"
    src.mkdir()
    write_hyperstack(src / "hs.tif", hyperstack())
    input_guard.protect(src / "hs.tif")
    widget.folder_in.value = src
    widget.folder_out.value = tmp_path / "out"
    widget.value.value = "2"
    with qtbot.waitSignal(widget.finished_job, timeout=TIMEOUT_MS):
        assert widget.run_folder() is not None, widget.status.value
    assert widget.last_report.done == [src / "hs.tif"], widget.last_report.summary()
    assert np.array_equal(tifffile.imread(tmp_path / "out" / "hs.tif"), alone)
