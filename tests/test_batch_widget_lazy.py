"""The LIIF upscale widget on lazy layers (Xvfb): a multiscale layer is upscaled from level 0 lazily
instead of refused, and a dask layer is never loaded whole: one pass over its chunks for the
intensity maps, then only the chunks a view needs."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

import napari  # noqa: F401
import dask.array as da
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("the widget GUI tests need a display: run them under xvfb-run -a", allow_module_level=True)

from batch_helpers import tiny_checkpoint, tiny_model  # noqa: E402

from napari_liif.api import upscale  # noqa: E402

pytestmark = pytest.mark.gui
TIMEOUT_MS = 60000


def counted(a: np.ndarray, chunks):
    """``a`` as a dask array whose chunk reads are counted (``reads``: key -> times read)."""
    reads, lock = {}, threading.Lock()

    def block(x, block_id=None):
        with lock:
            reads[block_id] = reads.get(block_id, 0) + 1
        return x

    lazy = da.from_array(a, chunks=chunks).map_blocks(block, dtype=a.dtype)
    return lazy, reads


@pytest.fixture
def widget(upscale_widget, tmp_path):
    w = upscale_widget(tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3))
    w.value.value = "2"
    return w.viewer, w


def test_a_dask_layer_is_never_loaded_whole(widget, qtbot):
    viewer, w = widget
    a = np.random.default_rng(0).integers(0, 4000, (600, 600)).astype(np.uint16)
    lazy, reads = counted(a, 100)
    viewer.add_image(lazy, name="lazy", contrast_limits=(0, 4000))
    reads.clear()  # napari's own look at it (contrast limits, the slice it shows) is not ours
    seen = {}
    real = w._layer_done
    w._layer_done = lambda result: seen.update(reads) or real(result)  # the worker's reads, before napari's
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as done:
        assert w.run_layer() is not None, w.status.value
    assert done.args[0] == "added 'lazy [LIIF x2]' (1200, 1200) uint16 (lazy: computed as you view it)"
    assert max(seen.values()) == 1 and len(seen) == 36  # the maps' one pass, chunk by chunk
    out = viewer.layers["lazy [LIIF x2]"]
    assert out.multiscale and isinstance(out.data[0], da.Array) and out.data[1] is lazy
    reads.clear()
    part = np.asarray(out.data[0][:64, :64])  # a view reads only the window of its output chunk
    assert len(reads) == 9 and max(reads.values()) == 1  # 3 x 3 of the 6 x 6 input chunks
    whole = upscale(a, scale=2, model=tiny_model(3))
    assert np.array_equal(part, whole[:64, :64])
    np.testing.assert_array_equal(out.scale, [0.5, 0.5])
    np.testing.assert_array_equal(out.translate, [-0.25, -0.25])


def test_a_multiscale_layer_is_upscaled_from_level_0(widget, qtbot):
    viewer, w = widget
    a = np.random.default_rng(1).integers(0, 255, (64, 72)).astype(np.uint8)
    levels = [da.from_array(a, chunks=32), da.from_array(a[::2, ::2], chunks=32)]
    viewer.add_image(levels, multiscale=True, name="pyr")
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS) as done:
        assert w.run_layer() is not None, w.status.value
    assert done.args[0].startswith("added 'pyr [LIIF x2]' (128, 144) uint8")
    out = viewer.layers["pyr [LIIF x2]"]
    assert [lv.shape for lv in out.data] == [(128, 144), (64, 72), (32, 36)]
    assert np.array_equal(np.asarray(out.data[0]), upscale(a, scale=2, model=tiny_model(3)))
    w.flux.value = "local"
    assert w.run_layer() is None and "flux preservation needs in-memory data" in w.status.value


def test_the_intensity_field_reaches_the_upscale(widget, qtbot):
    viewer, w = widget
    a = np.random.default_rng(2).integers(0, 4000, (24, 30)).astype(np.uint16)
    viewer.add_image(a, name="img")
    w.source.value = viewer.layers["img"]
    w.range.value = "1%,99%"
    with qtbot.waitSignal(w.finished_job, timeout=TIMEOUT_MS):
        assert w.run_layer() is not None, w.status.value
    got = np.asarray(viewer.layers["img [LIIF x2]"].data)
    assert np.array_equal(got, upscale(a, scale=2, model=tiny_model(3), percentiles=(1, 99)))
    assert not np.array_equal(got, upscale(a, scale=2, model=tiny_model(3)))
    w.range.value = "5,1"
    assert w.run_layer() is None and "limits must be (low, high) with low <= high" in w.status.value
