"""What live zoom reads from a layer, without a canvas (napari's ViewerModel): the plane as napari
slices and projects it, slices outside the layer, lazy data through the chunk cache, the one
intensity mapping for in-memory and lazy planes, RGBA premultiplied, and the fallback napari
itself would draw."""

from __future__ import annotations

import numpy as np
import pytest

import napari
import dask.array as da

from gui_helpers import bilinear_at  # noqa: E402

from napari_liif._qt.layer_state import check_layer, read_source  # noqa: E402
from napari_liif.live.planes import ChunkCache, Options  # noqa: E402
from napari_liif.intensity import IntensityMap  # noqa: E402


@pytest.fixture
def viewer():
    from napari.components import ViewerModel

    return ViewerModel()


def stack(seed=0, shape=(6, 20, 24)):
    return np.random.default_rng(seed).integers(0, 1000, shape).astype(np.uint16)


@pytest.mark.parametrize("mode", ["max", "min", "mean", "sum"])
def test_projection_modes_are_napari_s_thick_slices(viewer, mode):
    a = stack()
    layer = viewer.add_image(a, projection_mode=mode)
    viewer.dims.set_point(0, 2)
    viewer.dims.margin_left = (1.0, 0.0, 0.0)
    viewer.dims.margin_right = (1.0, 0.0, 0.0)
    st = read_source(viewer, layer)
    want = {"max": np.max, "min": np.min, "mean": np.mean, "sum": np.sum}[mode](a[1:4], axis=0)
    assert st.index == (slice(1, 4),) and st.projection == mode
    assert np.array_equal(st.plane(), want)
    np.testing.assert_array_equal(np.asarray(layer._slice.image.view), want)  # napari's own slice agrees
    prep = st.prepare()
    assert np.array_equal(prep.read(3, 9, 5, 11), want[3:9, 5:11])


def test_one_plane_thick_slab_is_that_plane(viewer):
    a = stack()
    st = read_source(viewer, viewer.add_image(a))  # napari 0.9's default projection is mean, one plane thick
    assert st.index == (2,) and st.projection == "none" and st.plane().dtype == np.uint16  # the middle of 6


def test_slices_outside_the_layer_show_nothing_as_in_napari(viewer):
    viewer.add_image(np.zeros((10, 20, 24), np.uint8), name="tall")
    short = viewer.add_image(stack(shape=(3, 20, 24)), translate=(5, 0, 0), name="short")
    viewer.dims.set_point(0, 2)
    assert read_source(viewer, short) == "idle: this slice is outside layer 'short' (napari shows nothing there)"
    viewer.dims.set_point(0, 6)
    assert read_source(viewer, short).index == (1,)


def test_chunk_cache_reads_each_chunk_once():
    import zarr
    a = stack(shape=(100, 90))
    z = zarr.create_array(store={}, shape=a.shape, chunks=(32, 32), dtype=a.dtype)
    z[:] = a
    reads = []

    def read(rows, cols):
        reads.append((rows.start, cols.start))
        return z[rows, cols]

    cache = ChunkCache(read, a.shape, (32, 32))
    for y0, y1, x0, x1 in ((0, 40, 0, 40), (10, 70, 20, 90), (5, 100, 0, 90), (31, 33, 31, 33)):
        assert np.array_equal(cache.window(y0, y1, x0, x1), a[y0:y1, x0:x1])
    assert cache.reads == 12 == len(reads) == len(set(reads))  # 4 x 3 chunks, each read once


def test_lazy_and_in_memory_planes_share_one_robust_map(viewer):
    a = stack(shape=(128, 128))
    a[3, 100] = 65535  # a hot pixel
    mem = read_source(viewer, viewer.add_image(a, name="mem"))
    lazy = read_source(viewer, viewer.add_image(da.from_array(a, chunks=32), name="lazy"))
    m_mem, m_lazy = mem.prepare().maps["value"], lazy.prepare().maps["value"]
    assert m_mem == IntensityMap.fit(a) and m_mem.hi < 2100  # the hot pixel no longer sets the range
    assert m_lazy.lo == 0 and abs(m_lazy.hi - m_mem.hi) <= 10  # from 16 of the 16 chunks' sample
    assert lazy.prepare().cache.reads == 16
    opt = read_source(viewer, viewer.layers["mem"], Options(limits=(100, 900))).prepare().maps["value"]
    assert (opt.lo, opt.hi) == (100, 900)
    pct = read_source(viewer, viewer.layers["lazy"], Options(percentiles=(1, 99))).prepare().maps["value"]
    assert abs(pct.lo - np.percentile(a, 1)) < 15 and abs(pct.hi - np.percentile(a, 99)) < 15


def test_multiscale_reads_level_0_and_maps_from_a_coarse_level(viewer):
    a = stack(shape=(256, 256))
    levels = [da.from_array(a, chunks=64), da.from_array(a[::2, ::2], chunks=64), da.from_array(a[::4, ::4], chunks=64)]
    st = read_source(viewer, viewer.add_image(levels, multiscale=True))
    assert st.data is levels[0] and st.coarse is not None and st.coarse.shape == (64, 64)
    prep = st.prepare()
    assert prep.cache.reads == 0  # the map came from the coarse level
    assert np.array_equal(prep.read(60, 70, 0, 130), a[60:70, :130]) and prep.cache.reads == 6


def test_rgba_goes_through_premultiplied_and_comes_back_straight(viewer):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (20, 24, 4)).astype(np.uint8)
    st = read_source(viewer, viewer.add_image(a, rgb=True))
    assert st.rgb and st.alpha
    prep = st.prepare()
    (_, colour), (_, alpha) = prep.fields
    ua = a[..., 3] / 255.0
    np.testing.assert_allclose(colour(0, 20, 0, 24), a[..., :3] / 255.0 * ua[..., None], atol=1e-6)
    np.testing.assert_allclose(alpha(0, 20, 0, 24), ua, atol=1e-7)
    # renders equal to the inputs (an identity model) come back as the straight colour and the alpha
    out = prep.combine([colour(0, 20, 0, 24), np.repeat(alpha(0, 20, 0, 24)[..., None], 3, -1)])
    seen = ua > 0
    np.testing.assert_allclose(out[..., :3][seen], a[..., :3][seen].astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(out[..., 3], ua, atol=1e-6)


def test_fallback_is_what_napari_draws_and_outliers_are_shown_as_they_are(viewer):
    a = stack(shape=(20, 24)).astype(np.float32)
    a[5, 6] = np.nan
    layer = viewer.add_image(a, interpolation2d="linear")
    prep = read_source(viewer, layer).prepare()
    region, shape = (2.25, 3.5, 10.75, 15.0), (17, 23)  # edge units: data + 0.5
    ys = region[0] + (np.arange(17) + 0.5) * (region[2] - region[0]) / 17 - 0.5
    xs = region[1] + (np.arange(23) + 0.5) * (region[3] - region[1]) / 23 - 0.5
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    filled = np.nan_to_num(a)
    lin = prep.fallback(region, shape)
    ok = np.isfinite(lin)
    np.testing.assert_allclose(lin[ok], bilinear_at(filled, yy, xx)[ok], rtol=1e-5)
    near = prep.nearest(region, shape)
    assert np.array_equal(near, a[np.floor(ys + 0.5).astype(int)][:, np.floor(xs + 0.5).astype(int)], equal_nan=True)
    out = prep.combine([np.zeros(shape + (3,), np.float32)], near)  # NaN under a sample shows as NaN
    assert np.array_equal(np.isnan(out), np.isnan(near)) and np.isnan(out).any()


def test_overlays_and_labels_are_not_sources(viewer):
    ov = viewer.add_image(np.zeros((4, 4)), name="x [LIIF]", metadata={"napari_liif_overlay_of": "x"})
    assert check_layer(ov) == "layer 'x [LIIF]' is a live-zoom overlay; choose the image layer it shows"
    assert "Labels layer" in check_layer(viewer.add_labels(np.zeros((4, 4), np.int32)))
