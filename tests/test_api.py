"""``napari_liif.upscale``: layouts, dtypes, intensity handling and input validation.

Values are checked against computations made here: the official whole-grid query through
``LIIF.forward`` (``reference_render``), per-plane and per-channel upscales, and a model
that renders exact bilinear interpolation (``bilinear_model``) where intensities matter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers_models import bilinear_numpy, reference_render, tiny_model, write_tiny_checkpoint

from napari_liif.api import check_allocatable, output_hw, upscale

H, W = 12, 17
MISSING = "/nonexistent/model.safetensors"  # validation must fail before any model is loaded


pytestmark = pytest.mark.usefixtures("single_thread_module")  # conftest.py, as is ``bmodel``


@pytest.fixture(scope="module")
def model():
    """The tiny LIIF of ``helpers_models`` (overrides conftest's model of the command tests)."""
    return tiny_model(seed=3)


@pytest.fixture
def gen():
    return np.random.default_rng(42)


# -- values -----------------------------------------------------------------------------
def test_gray_uint8_is_the_mean_of_the_models_render(model, gen):
    a = gen.integers(0, 256, (H, W), dtype=np.uint8)
    out = upscale(a, scale=2, model=model)
    ref = reference_render(model, a / 255.0, (24, 34)).mean(-1) * 255  # uint8: dtype range
    assert out.dtype == np.uint8 and out.shape == (24, 34)
    assert np.abs(out - ref).max() <= 0.5 + 1e-3  # rounding only
    assert np.mean(out == np.rint(ref)) > 0.99


def test_gray_float_uses_the_data_range_and_returns_float(model, gen):
    a = gen.uniform(-3.0, 5.0, (H, W))
    lo, hi = a.min(), a.max()
    out = upscale(a, scale=(2, 1.5), model=model)
    ref = reference_render(model, (a - lo) / (hi - lo), (24, 26)).mean(-1) * (hi - lo) + lo
    assert out.dtype == np.float64 and out.shape == (24, 26)
    np.testing.assert_allclose(out, ref, atol=1e-5 * (hi - lo))
    assert lo <= out.min() and out.max() <= hi


def test_rgb_goes_through_the_model_as_colour(model, gen):
    a = gen.integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = upscale(a, scale=2, model=model)
    ref = reference_render(model, a / 255.0, (24, 34)) * 255
    assert out.dtype == np.uint8 and out.shape == (24, 34, 3)
    assert np.abs(out - ref).max() <= 0.5 + 1e-3
    # colour, not gray: the three channels differ (a gray path would make them equal)
    assert np.abs(out[..., 0].astype(int) - out[..., 1]).max() > 0


def test_rgba_is_upscaled_premultiplied(model, bmodel, gen):
    a = gen.uniform(0.0, 1.0, (H, W, 4))
    a[..., 3] = np.clip(gen.uniform(-0.5, 1.5, (H, W)), 0, 1)  # fully transparent and opaque pixels
    out = upscale(a, scale=2, model=bmodel)
    alpha = bilinear_numpy(a[..., 3], (24, 34))
    premult = np.stack([bilinear_numpy(a[..., c] * a[..., 3], (24, 34)) for c in range(3)], -1)
    assert out.shape == (24, 34, 4)
    np.testing.assert_allclose(out[..., 3], alpha, atol=2e-6)  # alpha: its [0, 1] range, not fitted
    seen = alpha > 1e-3
    np.testing.assert_allclose(out[..., :3][seen] * alpha[seen, None], premult[seen], atol=2e-5)
    # uint8 through a real model: alpha is the gray upscale, colour the premultiplied colour render
    b = gen.integers(0, 256, (H, W, 4), dtype=np.uint8)
    out8 = upscale(b, scale=2, model=model)
    assert np.array_equal(out8[..., 3], upscale(b[..., 3], scale=2, model=model))
    ua = b[..., 3] / 255.0
    colour = reference_render(model, b[..., :3] / 255.0 * ua[..., None], (24, 34))
    ra = reference_render(model, ua, (24, 34)).mean(-1)
    want = np.clip(colour / ra[..., None], 0, 1) * 255
    ok = ra > 0.05
    assert np.abs(out8[..., :3][ok] - want[ok]).max() <= 0.5 + 2e-3


def test_transparent_colour_never_bleeds_and_stays_transparent(bmodel, gen):
    a = np.zeros((H, W, 4), np.uint8)
    a[..., :3] = gen.integers(0, 256, (H, W, 3))  # garbage colour under transparent pixels
    a[:, :8, :3] = (200, 30, 10)
    a[:, :8, 3] = 255  # an opaque red-brown half
    out = upscale(a, scale=3, model=bmodel)
    assert out[:, 27:, 3].max() == 0  # the transparent half (its outputs' taps all transparent)
    visible = out[..., 3] > 0
    assert visible[:, :24].all() and visible.sum() > 24 * 36
    # where anything shows, it is exactly the opaque colour: nothing of the garbage mixes in
    assert np.array_equal(out[visible][:, :3], np.broadcast_to([200, 30, 10], (visible.sum(), 3)))


def test_size_gives_exactly_that_grid_with_the_official_cell(model, gen):
    a = gen.random((H, W)).astype(np.float32)
    out = upscale(a, size=(30, 41), model=model)
    lo, hi = float(a.min()), float(a.max())
    ref = reference_render(model, (a - lo) / (hi - lo), (30, 41), cell_hw=(2 / 30, 2 / 41))
    assert out.shape == (30, 41) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref.mean(-1) * (hi - lo) + lo, atol=1e-5)


def test_channel_axis_equals_per_channel_gray_upscales(model, gen):
    # five channels with very different ranges: each gets its own intensity map (the fourth too:
    # it is a channel like the others, not an alpha)
    a = np.stack([gen.integers(0, 200, (H, W)), gen.integers(1000, 4000, (H, W)),
                  gen.integers(30000, 60000, (H, W)), gen.integers(100, 300, (H, W)),
                  gen.integers(5000, 9000, (H, W))]).astype(np.uint16)
    out = upscale(a, scale=2, model=model, channel_axis=0)
    assert out.shape == (5, 24, 34) and out.dtype == np.uint16
    for c in range(5):
        assert np.array_equal(out[c], upscale(a[c], scale=2, model=model)), c
    assert out[0].max() <= 199 and 1000 <= out[1].min() and out[1].max() <= 3999 and 30000 <= out[2].min()
    # the same data with channels last, and in the middle of a (z, c, y, x) stack
    last = upscale(np.moveaxis(a, 0, -1), scale=2, model=model, channel_axis=-1)
    assert np.array_equal(np.moveaxis(last, -1, 0), out)
    zc = np.stack([a, a[::-1]])  # (2, 5, H, W)
    mid = upscale(zc, scale=2, model=model, channel_axis=1)
    assert mid.shape == (2, 5, 24, 34)
    for c in range(5):
        assert np.array_equal(mid[:, c], upscale(zc[:, c], scale=2, model=model))


def test_zyx_stack_equals_per_slice_upscales(model, gen):
    a = gen.integers(0, 256, (4, H, W), dtype=np.uint8)  # uint8: one fixed map, so slices are independent
    out = upscale(a, scale=1.5, model=model)
    assert out.shape == (4, 18, 26)  # round(17 * 1.5) = round(25.5) = 26
    for z in range(4):
        assert np.array_equal(out[z], upscale(a[z], scale=1.5, model=model))


def test_tzyx_stack_shares_one_intensity_map(model, gen):
    a = gen.uniform(10.0, 20.0, (2, 3, H, W)).astype(np.float32)
    a[..., 0, 0], a[..., 0, 1] = 10.0, 20.0  # every slice spans the range of the whole stack
    out = upscale(a, scale=2, model=model)
    assert out.shape == (2, 3, 24, 34) and out.dtype == np.float32
    for t in range(2):
        for z in range(3):
            np.testing.assert_allclose(out[t, z], upscale(a[t, z], scale=2, model=model), rtol=0, atol=2e-6)


def test_stack_map_is_global_not_per_slice(model, gen):
    dim = gen.uniform(0.0, 1.0, (H, W))
    a = np.stack([dim, dim * 100])  # slice 1 is 100x brighter
    lo, hi = a.min(), a.max()
    out = upscale(a, scale=2, model=model)
    for z in range(2):  # both slices go through the map of the whole stack
        ref = reference_render(model, (a[z] - lo) / (hi - lo), (24, 34)).mean(-1) * (hi - lo) + lo
        np.testing.assert_allclose(out[z], ref, atol=1e-5 * (hi - lo))
    assert np.abs(out[0] - upscale(dim, scale=2, model=model)).max() > 1e-3  # not a per-slice map


def test_uint16_12bit_range_is_kept(bmodel):
    ramp = np.linspace(100, 4000, H * W).reshape(H, W).round().astype(np.uint16)
    out = upscale(ramp, scale=2, model=bmodel)
    assert out.dtype == np.uint16
    assert out.min() == 100 and out.max() == 4000  # border samples equal the corner pixels
    assert np.abs(out - bilinear_numpy(ramp, (24, 34))).max() <= 0.5 + 1e-3
    assert abs(out.mean() - ramp.mean()) < 2


@pytest.mark.parametrize("dtype, lo, hi", [
    (np.int16, -2000, 1500), (np.int32, 1_000_000_000, 1_000_000_300), (np.int64, -5, 5),
    (np.uint32, 0, 70000), (np.float32, -1.0, 1.0), (np.float64, 1e-3, 2e-3), (np.float16, 0.0, 8.0),
])
def test_dtypes_keep_dtype_and_values(bmodel, gen, dtype, lo, hi):
    a = gen.uniform(lo, hi, (H, W)).astype(dtype)
    out = upscale(a, scale=2, model=bmodel)
    assert out.dtype == dtype and out.shape == (24, 34)
    ref = bilinear_numpy(a, (24, 34))
    tol = 0.5 + 1e-3 if np.dtype(dtype).kind in "iu" else 2e-6 * (hi - lo) + 4 * np.finfo(dtype).eps * abs(hi)
    assert np.abs(out.astype(np.float64) - ref).max() <= tol


def test_bool_upscale_is_thresholded_interpolation(bmodel):
    a = np.zeros((H, W), bool)
    a[3:9, 4:12] = True
    out = upscale(a, scale=2, model=bmodel)
    assert out.dtype == bool
    assert np.array_equal(out, bilinear_numpy(a, (24, 34)) >= 0.5)
    assert out.sum() == 4 * a.sum()  # a 6x8 block becomes 12x16


@pytest.mark.parametrize("a", [
    np.full((H, W), 77, np.uint8), np.full((H, W), 1234, np.uint16), np.full((H, W), -7, np.int32),
    np.full((H, W), 0.37, np.float32), np.full((2, H, W), 5.5), np.tile(np.array([10, 200, 30], np.uint8), (H, W, 1)),
])
def test_constant_image_stays_constant(model, a):
    out = upscale(a, scale=2.5, model=model)
    first = a[..., :1, :1, :] if a.shape[-1] == 3 else a[..., :1, :1]
    assert out.dtype == a.dtype and out.shape[-1 - (a.shape[-1] == 3)] == 42
    assert np.array_equal(out, np.broadcast_to(first, out.shape))


def test_blank_slice_of_a_stack_stays_blank(model, gen):
    a = gen.integers(0, 4096, (3, H, W)).astype(np.uint16)
    a[1] = 0
    out = upscale(a, scale=2, model=model)
    assert out[1].max() == 0 and out[0].max() > 0


def test_cell_modes(model, gen):
    a = gen.random((H, W)).astype(np.float32)
    on, off, clamp = (upscale(a, scale=2, model=model, cell=c) for c in ("on", "off", "clamp"))
    assert np.abs(on - off).max() > 1e-4  # the cell reaches the decoder
    assert np.array_equal(on, clamp)  # x2 is inside the training range: clamp changes nothing
    on8, clamp8 = (upscale(a, scale=8, model=model, cell=c) for c in ("on", "clamp"))
    lo, hi = float(a.min()), float(a.max())
    ref = reference_render(model, (a - lo) / (hi - lo), (96, 136), cell_hw=(2 / 48, 2 / 68))  # x8 cell x2
    np.testing.assert_allclose(clamp8, ref.mean(-1) * (hi - lo) + lo, atol=1e-5)
    assert np.abs(on8 - clamp8).max() > 1e-4


def test_model_given_as_a_path(tmp_path, model, gen):
    path = write_tiny_checkpoint(tmp_path / "m.safetensors", seed=3)
    a = gen.integers(0, 256, (H, W), dtype=np.uint8)
    assert np.array_equal(upscale(a, scale=2, model=path), upscale(a, scale=2, model=model))


def test_progress_counts_output_pixels_and_stop(model, gen):
    a = gen.integers(0, 256, (3, H, W), dtype=np.uint8)
    seen = []
    upscale(a, scale=2, model=model, progress=lambda d, n: seen.append((d, n)))
    done = [d for d, _ in seen]
    assert {n for _, n in seen} == {3 * 24 * 34} and done[-1] == 3 * 24 * 34 and done == sorted(done)
    calls = []
    with pytest.raises(InterruptedError, match="after 1 of 3"):
        upscale(a, scale=2, model=model, should_stop=lambda: calls.append(1) or len(calls) > 1)


def test_output_hw_numbers():
    assert output_hw((12, 17), scale=2) == (24, 34)
    assert output_hw((12, 17), scale=(0.5, 3)) == (6, 51)
    assert output_hw((12, 17), scale=2.5) == (30, 42)  # round half to even, as the official code
    assert output_hw((12, 17), scale=1e-9) == (1, 1)
    assert output_hw((12, 17), size=(5, 7)) == (5, 7)
    assert output_hw((12, 17), size=np.array([5, 7])) == (5, 7)
    assert output_hw((12, 17), size=(5.0, 7.0)) == (5, 7)


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("scale, shown", [
    (0, "0"), (-1.5, "-1.5"), (float("nan"), "nan"), (float("inf"), "inf"), (-math.inf, "-inf"),
    ("2", "'2'"), (True, "True"), ((1, 2, 3), "(1, 2, 3)"), ((2, 0), "0"), (2j, "2j"),
])
def test_bad_scale_names_the_value(scale, shown):
    with pytest.raises(ValueError, match="scale") as e:
        upscale(np.zeros((H, W), np.uint8) + 1, scale=scale, model=MISSING)
    assert shown in str(e.value)


@pytest.mark.parametrize("size, shown", [
    ((0, 5), "(0, 5)"), ((5, 0), "(5, 0)"), ((2.5, 3), "2.5"), ((float("nan"), 3), "nan"), ((-4, 4), "-4"),
    ((4,), "(4,)"), ("4,5", "'4,5'"), ((float("inf"), 2), "inf"),
])
def test_bad_size_names_the_value(size, shown):
    with pytest.raises(ValueError, match="size") as e:
        upscale(np.ones((H, W), np.uint8), size=size, model=MISSING)
    assert shown in str(e.value)


def test_scale_and_size_exactly_one():
    a = np.ones((H, W), np.uint8)
    with pytest.raises(ValueError, match="exactly one of scale= or size="):
        upscale(a, model=MISSING)
    with pytest.raises(ValueError, match=r"scale=2, size=\(4, 4\)"):
        upscale(a, scale=2, size=(4, 4), model=MISSING)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (3, 0, 5), (0, 12, 17), (17,), ()])
def test_empty_or_shapeless_image(shape):
    with pytest.raises(ValueError, match="at least one pixel") as e:
        upscale(np.zeros(shape, np.float32), scale=2, model=MISSING)
    assert str(shape) in str(e.value)


@pytest.mark.parametrize("data, shown", [
    (np.array([["a", "b"], ["c", "d"]]), "<U1"), (np.ones((3, 3), complex), "complex128"),
    (np.empty((3, 3), object), "object"),
])
def test_unsupported_dtypes(data, shown):
    with pytest.raises(TypeError, match=shown):
        upscale(data, scale=2, model=MISSING)


@pytest.mark.parametrize("axis, shown", [(3, "channel_axis=3"), (-4, "channel_axis=-4"), (1.0, "1.0"), ("0", "'0'")])
def test_bad_channel_axis(axis, shown):
    with pytest.raises(ValueError, match="channel_axis") as e:
        upscale(np.ones((2, H, W), np.uint8), scale=2, channel_axis=axis, model=MISSING)
    assert shown in str(e.value)


def test_bad_cell_and_rgb():
    with pytest.raises(ValueError, match="'bogus'"):
        upscale(np.ones((H, W), np.uint8), scale=2, cell="bogus", model=MISSING)
    with pytest.raises(ValueError, match=r"shape \(12, 17, 5\)"):
        upscale(np.ones((H, W, 5), np.uint8), scale=2, rgb=True, model=MISSING)


def test_check_allocatable():
    check_allocatable((100, 100, 3), np.uint8)  # fine
    with pytest.raises(MemoryError, match=r"shape \(1000000, 1000000, 3\) \(uint16\) needs 5587.9 GiB"):
        check_allocatable((10**6, 10**6, 3), np.uint16)
    with pytest.raises(MemoryError, match="bytes but only"):  # astronomically large: no float overflow
        check_allocatable((10**200, 10**200), np.float64)


def test_too_large_output_is_a_memory_error_before_any_work():
    a = np.ones((H, W), np.uint8)
    with pytest.raises(MemoryError, match=r"shape \(1000000, 2000000\)"):
        upscale(a, size=(10**6, 2 * 10**6), model=MISSING)
    with pytest.raises(MemoryError, match="GiB"):
        upscale(a, scale=1e6, model=MISSING)
    with pytest.raises(MemoryError, match="too large"):
        upscale(a, scale=1e308, model=MISSING)


# -- robust intensities and the explicit options --------------------------------------------------
def _hot(gen):
    a = gen.integers(300, 1200, (H, W)).astype(np.uint16)
    big = np.tile(a, (3, 3))  # 36 x 51: enough pixels for the 99.9th percentile to exclude one
    big[4, 40] = 65535
    return big


def test_hot_pixel_is_carried_and_does_not_squeeze_the_rest(bmodel, gen):
    a = _hot(gen)
    out = upscale(a, scale=2, model=bmodel)
    hot = np.zeros(out.shape, bool)
    hot[8:10, 80:82] = True  # the output pixels whose nearest input pixel is the hot one
    assert np.all(out[hot] == 65535) and out[~hot].max() < 2500
    from napari_liif.intensity import IntensityMap

    hi = IntensityMap.fit(a).hi
    ref = bilinear_numpy(np.minimum(a, hi), out.shape)  # the model sees the hot pixel clipped to hi
    assert np.abs(out[~hot] - ref[~hot]).max() <= 0.5 + 1e-3


def test_limits_and_percentiles_reach_the_model_and_nothing_is_lost(bmodel, gen):
    a = gen.uniform(0.0, 1000.0, (H, W))
    out = upscale(a, scale=2, model=bmodel, limits=(200, 800))
    near = a[np.arange(24) // 2][:, np.arange(34) // 2]
    outside = (near < 200) | (near > 800)
    ref = bilinear_numpy(np.clip(a, 200, 800), (24, 34))
    assert np.array_equal(out[outside], near[outside])  # carried back as they were
    np.testing.assert_allclose(out[~outside], ref[~outside], atol=1e-9 * 1000 + 1e-6 * 600)
    p = upscale(a, scale=2, model=bmodel, percentiles=(0, 100))  # the whole range: plain bilinear
    np.testing.assert_allclose(p, bilinear_numpy(a, (24, 34)), atol=1e-6 * 1000)
    with pytest.raises(ValueError, match=r"limits must be \(low, high\) with low <= high, got \(9, 1\)"):
        upscale(a, scale=2, model=bmodel, limits=(9, 1))
