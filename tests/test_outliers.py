"""Outliers stay isolated (issue 19 item 4): a carried hot pixel comes back exactly on its
footprint and raises its neighbours no more than the model does with that pixel at the top of the
map's range; flux preservation keeps carried values, stays inside the range of the values the map
holds, and adds no zeros beside hot pixels. Real bundled models on a small uint16 image."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from napari_liif import upscale
from napari_liif.engine import load_model
from napari_liif.flux import preserve_flux
from napari_liif.intensity import IntensityMap

HOT = [(17, 23), (6, 30)]  # 65535: at x2.5 the first one's footprint straddles into its neighbours
DARK = [(30, 9)]  # a 0 speck inside the map's range (the range reaches 0)


@pytest.fixture(scope="module")
def microscopy():
    return load_model("microscopy", device="cpu")


def noisy_cells(seed=0) -> np.ndarray:
    """64 x 64 uint16: camera offset 300, a bright filament (~2800), Poisson noise, two hot pixels
    (65535: 0.05 % of the pixels, above the 99.9th percentile) and one dark speck (0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    flux = 300 + 2500 * np.exp(-((yy - 0.6 * xx - 4) ** 2) / 4.0)
    img = np.clip(np.rint(rng.poisson(flux) + rng.normal(0, 5, flux.shape)), 0, 65535).astype(np.uint16)
    for r, c in HOT:
        img[r, c] = 65535
    for r, c in DARK:
        img[r, c] = 0
    return img


def footprint(n_in: int, n_out: int, i: int) -> np.ndarray:
    """Output samples along an axis whose centre ``(j + 1/2) n_in / n_out`` lies in input pixel
    ``[i, i + 1)``, in exact fractions (independent of the engine's nearest_index)."""
    return np.array([j for j in range(n_out) if i <= Fraction(2 * j + 1, 2) * Fraction(n_in, n_out) < i + 1])


def footprint_mask(in_hw, out_hw, pixels) -> np.ndarray:
    m = np.zeros(out_hw, bool)
    for r, c in pixels:
        m[np.ix_(footprint(in_hw[0], out_hw[0], r), footprint(in_hw[1], out_hw[1], c))] = True
    return m


def beside(in_hw, out_hw, pixels) -> np.ndarray:
    """The samples of the 8 input pixels around each of ``pixels`` (their footprints), not the
    pixels' own."""
    ring = [(r + dr, c + dc) for r, c in pixels for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
    return footprint_mask(in_hw, out_hw, ring) & ~footprint_mask(in_hw, out_hw, pixels)


def test_the_test_image_has_two_carried_hot_pixels_and_an_in_range_zero():
    img = noisy_cells()
    imap = IntensityMap.fit(img)
    assert imap.lo == 0 and 2800 < imap.hi < 6000  # robust top: the filament's 99.9th percentile + a span
    assert sorted(zip(*np.nonzero(imap.outside(img)))) == sorted(HOT)


def test_footprints_by_hand():
    assert footprint(64, 128, 17).tolist() == [34, 35]
    assert footprint(64, 192, 17).tolist() == [51, 52, 53]
    # x2.5: centres 42.5/2.5 = 17.0, 17.4, 17.8 (a centre on an edge belongs to the pixel starting there)
    assert footprint(64, 160, 17).tolist() == [42, 43, 44]
    assert footprint(64, 160, 6).tolist() == [15, 16]  # 6.2, 6.6 (7.0 is the next pixel's)


@pytest.mark.parametrize("scale, samples", [(2, 2 * 4), (3, 2 * 9), (2.5, 9 + 4)])
def test_hot_pixel_is_exact_on_its_footprint_and_neighbours_are_the_top_of_range_render(microscopy, scale, samples):
    """Exactly 65535 on the s x s samples whose centres lie in the pixel (at x2.5: 3 x 3 for pixel
    (17, 23), 2 x 2 for (6, 30): centres (j + 1/2) / 2.5 for j = 15, 16 in [6, 7)), nowhere
    else; every other sample equals the model's output for the input with the hot pixels set to
    the top of the map's range (explicit limits, public API), so no neighbour is raised above it."""
    img = noisy_cells()
    imap = IntensityMap.fit(img)
    out = upscale(img, scale=scale, model=microscopy)
    fp = footprint_mask(img.shape, out.shape, HOT)
    assert fp.sum() == samples
    assert np.all(out[fp] == 65535) and not np.any(out[~fp] == 65535)
    topped = np.clip(img, imap.lo, imap.hi)
    ref = upscale(topped, scale=scale, model=microscopy, limits=(imap.lo, imap.hi))
    np.testing.assert_array_equal(out[~fp], ref[~fp])
    near = beside(img.shape, out.shape, HOT)
    assert out[near].max() <= ref[near].max() < imap.hi  # the neighbours: no higher than the topped render


def block_sums(a: np.ndarray, s: int) -> np.ndarray:
    h, w = a.shape[0] // s, a.shape[1] // s
    return a.astype(np.int64).reshape(h, s, w, s).sum(axis=(1, 3))


def overlap_mean(image: np.ndarray, shape) -> np.ndarray:
    """Area average by an overlap matrix (as in test_flux.py, no code of ours)."""
    def weights(n_fine, n):
        k = np.arange(n_fine)
        lo, hi = np.arange(n)[:, None] * n_fine / n, (np.arange(n)[:, None] + 1) * n_fine / n
        return np.clip(np.minimum(hi, k + 1) - np.maximum(lo, k), 0, None) / (n_fine / n)

    a = np.asarray(image, np.float64)
    return np.einsum("ik,kl,jl->ij", weights(a.shape[0], shape[0]), a, weights(a.shape[1], shape[1]))


@pytest.mark.parametrize("scale", [2, 3])
def test_preserve_flux_at_integer_scales_is_exact_in_range_and_adds_no_zeros(microscopy, scale):
    """Every block sums to s^2 times its input pixel (hot pixels' blocks: 65535 each), every sample
    that is not carried lies in [0, max of the values the map holds] (the input's valid range
    without the hot pixels, 2889), the dark speck's block is all 0 and no sample beside a hot
    pixel is 0. (Before the bounded correction: 2 and 11 zeros beside the hot pixels at x2 and x3,
    samples up to 3431 and 3872, and 2 and 5 blocks off their sums where 0 was clipped.)"""
    img = noisy_cells()
    out = upscale(img, scale=scale, model=microscopy, preserve_flux=True)
    np.testing.assert_array_equal(block_sums(out, scale), scale * scale * img.astype(np.int64))
    fp = footprint_mask(img.shape, out.shape, HOT)
    assert np.all(out[fp] == 65535)
    held_max = int(np.sort(img, axis=None)[-len(HOT) - 1])  # the brightest pixel that is not hot
    assert out[~fp].min() >= 0 and out[~fp].max() <= held_max
    r, c = DARK[0]
    assert np.all(out[r * scale:(r + 1) * scale, c * scale:(c + 1) * scale] == 0)
    near = beside(img.shape, out.shape, HOT)
    assert np.count_nonzero(out[near] == 0) == 0
    assert np.count_nonzero(out == 0) == scale * scale  # the dark speck's block, nothing else


def test_preserve_flux_at_a_fractional_scale_keeps_averages_over_the_samples_not_carried(microscopy):
    """x2.5: the first hot pixel's footprint reaches 0.2 of a pixel into its neighbours above and
    left. Each pixel's average over the samples that are not carried equals it within 0.5 count
    (uint16 rounding); the carried samples hold 65535; the rest stays in the held range; no zero
    beside a hot pixel. (Before: the footprint fell to 58623, straddling samples rose to 15430 and
    28 samples beside the hot pixels were 0.)"""
    img = noisy_cells()
    out = upscale(img, scale=2.5, model=microscopy, preserve_flux=True)
    fp = footprint_mask(img.shape, out.shape, HOT)
    assert np.all(out[fp] == 65535)
    free = overlap_mean((~fp).astype(float), img.shape)
    mean = overlap_mean(np.where(fp, 0.0, out), img.shape) / np.where(free > 0, free, 1)
    hot = np.zeros(img.shape, bool)
    hot[tuple(np.array(HOT).T)] = True
    assert np.abs(mean - img)[~hot].max() <= 0.5
    # sample row 42 covers input rows [16.8, 17.2): 0.2 of pixel (16, 23)'s rows, all of its columns
    assert free[16, 23] == pytest.approx(0.8, abs=1e-12)
    held_max = int(np.sort(img, axis=None)[-len(HOT) - 1])
    assert out[~fp].min() >= 0 and out[~fp].max() <= held_max
    assert np.count_nonzero(out[beside(img.shape, out.shape, HOT)] == 0) == 0


# ----------------------------------------------------------------------- the correction by hand


def test_bounded_correction_by_hand_at_x2():
    """Input [100, 300, 65535, 400, 200] (the 65535 carried), bounds (100, 400), x2 (blocks of 2 x 2):
    * 300: model block columns 150, 390 (mean 270). The smallest move (+30 each) gives 420 > 400,
      so both scale towards 400 by 30 / mean(250, 10) = 3/13: 150 + 250 * 3/13, 390 + 10 * 3/13.
    * 200: columns 110, 390 (mean 250); -50 each gives 60 < 100, so both scale towards 100 by
      -50 / mean(10, 290) = -1/3: 110 - 10/3, 390 - 290/3 (least-squares would clip 60 to 100).
    * 65535: held as given (60000: not even its own value; its average is not asked for).
    * 100 and 400 already exact: unchanged."""
    image = np.array([[100.0, 300, 65535, 400, 200]])
    cols = np.array([100, 100, 150, 390, 60000, 60000, 400, 400, 110, 390], float)
    output = np.vstack([cols, cols])
    outliers = image > 1000
    got = preserve_flux(output, image, outliers=outliers, bounds=(100, 400))
    want = np.array([100, 100, 150 + 250 * 3 / 13, 390 + 10 * 3 / 13, 60000, 60000, 400, 400, 110 - 10 / 3,
                     390 - 290 / 3])
    np.testing.assert_allclose(got, np.vstack([want, want]), rtol=0, atol=1e-9)
    # without bounds and outliers: the least-squares correction, leaving the range and moving the hot block
    ls = preserve_flux(output, image)
    assert ls[0, 9] == pytest.approx(340) and ls[0, 4] == pytest.approx(65535)


def test_bounded_correction_is_the_least_squares_one_where_that_stays_in_range():
    rng = np.random.default_rng(3)
    image = rng.uniform(1000, 2000, (6, 7))
    output = np.kron(image, np.ones((2, 3))) + rng.normal(0, 20, (12, 21))
    np.testing.assert_array_equal(preserve_flux(output, image, bounds=(900, 2100)), preserve_flux(output, image))


@pytest.mark.parametrize("out_hw", [(12, 12), (13, 17)])
def test_bounded_correction_at_fractional_scales(out_hw):
    """5 x 5 -> 12 x 12 (x2.4) and 13 x 17: one carried pixel; held samples unchanged, every other
    average over the free samples exact to 1e-9, every free sample within the bounds."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:5, :5]
    image = 1000 + 100 * yy + 50 * xx + rng.uniform(-20, 20, (5, 5))
    image[2, 3] = 50000
    outliers = image > 10000
    rows = (np.arange(out_hw[0]) * 2 + 1) * 5 // (2 * out_hw[0])
    cols = (np.arange(out_hw[1]) * 2 + 1) * 5 // (2 * out_hw[1])
    held = outliers[rows][:, cols]
    output = np.where(held, 50000.0, image[rows][:, cols] + rng.normal(0, 300, out_hw))
    low, high = image[~outliers].min(), image[~outliers].max()
    got = preserve_flux(output, image, outliers=outliers, bounds=(low, high))
    np.testing.assert_array_equal(got[held], 50000.0)
    assert got[~held].min() >= low and got[~held].max() <= high
    free = overlap_mean((~held).astype(float), (5, 5))
    mean = overlap_mean(np.where(held, 0.0, got), (5, 5)) / free
    assert np.abs(mean - image)[~outliers].max() < 1e-9 * 50000


def test_bad_outliers_and_bounds_are_refused():
    with pytest.raises(ValueError, match=r"outliers must be a boolean mask of the input's shape \(2, 2\)"):
        preserve_flux(np.zeros((4, 4)), np.zeros((2, 2)), outliers=np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match="bounds must be finite"):
        preserve_flux(np.zeros((4, 4)), np.zeros((2, 2)), bounds=(5, 1))
