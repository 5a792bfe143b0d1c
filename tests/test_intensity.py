"""The intensity map: dtype range for uint8/bool, the robust range of the valid values otherwise
(or explicit limits / percentiles), invertible."""

from __future__ import annotations

import numpy as np
import pytest

from napari_liif.intensity import IntensityMap, to_unit_float


@pytest.fixture
def gen():
    return np.random.default_rng(7)


def test_uint8_uses_the_dtype_range(gen):
    a = gen.integers(40, 90, (9, 11), dtype=np.uint8)  # a narrow range is NOT stretched
    m = IntensityMap.fit(a)
    assert (m.lo, m.hi) == (0.0, 255.0)
    u = m.forward(a)
    assert u.dtype == np.float32
    np.testing.assert_allclose(u, a / 255.0, rtol=0, atol=1e-7)
    assert np.array_equal(m.inverse(u), a)


def test_bool_uses_zero_one_and_thresholds_back():
    a = np.array([[True, False], [False, True]])
    m = IntensityMap.fit(a)
    assert (m.lo, m.hi) == (0.0, 1.0)
    assert np.array_equal(m.forward(a), a.astype(np.float32))
    assert np.array_equal(m.inverse(np.array([0.49, 0.5, 0.51, 1.0])), [False, True, True, True])


@pytest.mark.parametrize("dtype, lo, hi", [
    (np.uint16, 0, 65535), (np.uint16, 100, 4095), (np.int16, -32768, 32767), (np.int8, -100, 27),
    (np.int32, -(2**20), 2**20), (np.int32, 1_000_000_000, 1_000_000_500), (np.uint32, 0, 2**24),
    (np.int64, -(10**6), 10**6),
])
def test_integers_use_the_data_range_and_round_trip_exactly(gen, dtype, lo, hi):
    a = gen.integers(lo, hi, (13, 9), endpoint=True).astype(dtype)
    a.flat[:2] = lo, hi
    m = IntensityMap.fit(a)
    assert (m.lo, m.hi) == (float(lo), float(hi))
    u = m.forward(a)
    assert u.dtype == np.float32 and u.min() == 0.0 and u.max() == 1.0
    back = m.inverse(u)
    assert back.dtype == dtype
    assert np.array_equal(back, a)  # within rounding: exact for integers


def test_int32_far_from_zero_keeps_its_detail():
    # float32 has 24 bits: converting 1e9 + k to float32 before subtracting lo loses k
    a = (1_000_000_000 + np.arange(64)).astype(np.int32).reshape(8, 8)
    u = IntensityMap.fit(a).forward(a)
    np.testing.assert_allclose(u.ravel(), np.arange(64) / 63, rtol=0, atol=1e-7)
    assert len(np.unique(u)) == 64


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_floats_round_trip_within_float32_precision(gen, dtype):
    a = gen.uniform(-250.0, 1e3, (10, 12)).astype(dtype)
    m = IntensityMap.fit(a)
    assert m.lo == float(a.min()) and m.hi == float(a.max())
    u = m.forward(a)
    assert 0.0 == u.min() and u.max() == 1.0
    back = m.inverse(u)
    assert back.dtype == dtype
    tol = 1e-6 * (m.hi - m.lo) if dtype != np.float16 else float(np.finfo(np.float16).eps) * 1e3
    np.testing.assert_allclose(back.astype(np.float64), a.astype(np.float64), rtol=0, atol=tol)


def test_small_float_values_round_trip_relative(gen):
    a = gen.uniform(1e-6, 3e-6, (10, 12))
    m = IntensityMap.fit(a)
    back = m.inverse(m.forward(a))
    np.testing.assert_allclose(back, a, rtol=1e-6)


def test_non_finite_values_are_excluded_from_the_range_and_mapped_to_the_ends():
    a = np.array([[np.nan, 2.0, 4.0], [np.inf, -np.inf, 3.0]], np.float32)
    m = IntensityMap.fit(a)
    assert (m.lo, m.hi) == (2.0, 4.0)
    np.testing.assert_array_equal(m.forward(a), [[0.0, 0.0, 1.0], [1.0, 0.0, 0.5]])
    all_nan = IntensityMap.fit(np.full((2, 2), np.nan))
    assert (all_nan.lo, all_nan.hi) == (0.0, 1.0)


def test_constant_data_maps_to_zero_and_back_to_the_constant():
    for a in (np.full((4, 5), 1234, np.uint16), np.full((4, 5), -2.5), np.full((4, 5), 7, np.int8)):
        m = IntensityMap.fit(a)
        u = m.forward(a)
        assert np.array_equal(u, np.zeros(a.shape, np.float32))
        # whatever the model returns, a constant comes back as the constant
        back = m.inverse(np.linspace(0, 1, 20).reshape(4, 5))
        assert back.dtype == a.dtype and np.array_equal(back, a)


def test_explicit_limits_clip_for_the_model_and_invert_linearly():
    a = np.array([0, 50, 100, 150, 200], np.uint16)
    m = IntensityMap.fit(a, lo=50, hi=150)  # e.g. napari contrast limits
    np.testing.assert_allclose(m.forward(a), [0.0, 0.0, 0.5, 1.0, 1.0])
    assert np.array_equal(m.inverse(np.array([0.0, 0.25, 1.0])), np.array([50, 75, 150], np.uint16))


def test_inverse_rounds_and_clips_to_the_integer_dtype():
    m = IntensityMap(lo=0.0, hi=300.0, dtype=np.dtype(np.uint8))
    assert np.array_equal(m.inverse(np.array([0.0, 0.5, 1.0, 0.0016, 0.0017])), np.array([0, 150, 255, 0, 1], np.uint8))
    m16 = IntensityMap(lo=-10.0, hi=10.0, dtype=np.dtype(np.uint16))
    assert np.array_equal(m16.inverse(np.array([0.0, 0.5, 0.8])), np.array([0, 0, 6], np.uint16))


def test_to_unit_float_and_bad_dtypes():
    a = np.array([[10, 20], [30, 40]], np.uint16)
    np.testing.assert_allclose(to_unit_float(a), [[0.0, 1 / 3], [2 / 3, 1.0]], atol=1e-7)
    for bad in (np.ones(3, complex), np.array(["x"]), np.empty(2, object)):
        with pytest.raises(TypeError, match=str(bad.dtype)):
            IntensityMap.fit(bad)


# -- the robust range and the explicit options ---------------------------------------------------
def _speckled(gen, shape=(64, 64)):
    """16-bit data of 100..1100 with one hot pixel (65535) and one dead pixel (0)."""
    a = gen.integers(100, 1101, shape).astype(np.uint16)
    a[..., 5, 45], a[..., 40, 3] = 65535, 0
    return a


def test_robust_range_trims_hot_and_dead_pixels_only(gen):
    a = _speckled(gen)
    m = IntensityMap.fit(a)
    vals = np.sort(a.ravel())
    n = vals.size
    p_lo, p_hi = vals[int(np.floor(0.001 * (n - 1)))], vals[int(np.ceil(0.999 * (n - 1)))]
    span = float(p_hi) - float(p_lo)
    assert (m.lo, m.hi) == (0, int(np.ceil(p_hi + span)))  # the dead pixel is within a span of p_lo
    assert 2000 < m.hi < 2200 and isinstance(m.hi, int)
    out = m.outside(a)
    assert out.sum() == 1 and out[5, 45]  # only the hot pixel cannot be held
    u = m.forward(a)
    assert u[5, 45] == 1.0 and 0.04 < u[a > 0].min() < 0.06 and 0.45 < np.sort(u.ravel())[-2] < 0.55
    assert IntensityMap.fit(a, robust=False).hi == 65535
    b = a.copy()
    b[5, 45] = 1000  # without outliers the range is exactly the data's
    assert (IntensityMap.fit(b).lo, IntensityMap.fit(b).hi) == (0, 1100)


def test_constant_background_with_a_hot_pixel_is_a_constant_map():
    a = np.full((40, 40), 500, np.uint16)
    a[7, 9] = 60000
    m = IntensityMap.fit(a)
    assert (m.lo, m.hi) == (500, 500)
    assert m.outside(a).sum() == 1


def test_percentiles_and_limits_options(gen):
    a = gen.normal(1000.0, 100.0, (50, 60)).astype(np.float32)
    m = IntensityMap.fit(a, percentiles=(1, 99))
    assert (m.lo, m.hi) == (float(np.percentile(a, 1, method="lower")), float(np.percentile(a, 99, method="higher")))
    assert m.outside(a).sum() == np.sum(a < m.lo) + np.sum(a > m.hi) > 50
    assert IntensityMap.fit(a, 800.0, 1200.0).hi == 1200.0
    u8 = gen.integers(0, 256, (20, 20), dtype=np.uint8)  # uint8 keeps its dtype range unless asked
    assert IntensityMap.fit(u8, percentiles=(0, 100)).hi == float(u8.max())


@pytest.mark.parametrize("kw, shown", [
    ({"limits": (5, 1)}, "limits must be (low, high) with low <= high, got (5, 1)"),
    ({"limits": (0, float("nan"))}, "limits must be two finite numbers (low, high), got (0, nan)"),
    ({"percentiles": (-1, 50)}, "percentiles must lie between 0 and 100, got (-1, 50)"),
    ({"percentiles": "1,99"}, "percentiles must be two finite numbers (low, high), got '1,99'"),
    ({"limits": (0, 1), "percentiles": (1, 99)}, "give either limits or percentiles, not both"),
])
def test_bad_options_name_the_value(kw, shown):
    from napari_liif.intensity import check_options

    with pytest.raises(ValueError) as info:
        check_options(**kw)
    assert shown in str(info.value)


def test_big_arrays_take_percentiles_from_the_regular_sample(gen, monkeypatch):
    import napari_liif.intensity as intensity

    monkeypatch.setattr(intensity, "SAMPLE_MAX", 400)
    a = _speckled(gen, (2, 60, 50))
    assert intensity.sample_step(a.shape) == 4 and intensity.spatial_sample(a).shape == (2, 15, 13)
    m = IntensityMap.fit(a, percentiles=(10, 90))
    s = a[..., ::4, ::4].ravel()
    assert (m.lo, m.hi) == (np.percentile(s, 10, method="lower"), np.percentile(s, 90, method="higher"))
    rgb = gen.integers(0, 4000, (60, 50, 3)).astype(np.uint16)
    assert intensity.spatial_sample(rgb, colour=True).shape == (12, 10, 3)  # colour stays whole
