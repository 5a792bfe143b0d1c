"""Flux preservation (napari_liif.flux): area averages, the exact correction, integer rounding."""

from __future__ import annotations

import numpy as np
import pytest

from napari_liif.flux import area_average, preserve_flux


def overlap_mean(image: np.ndarray, shape) -> np.ndarray:
    """An independent area average (no code of ours): coarse pixel i of n along an axis of N fine
    pixels spans [i N / n, (i + 1) N / n]; weight of fine pixel k = its overlap with that span
    divided by the span's length. Rows, then columns, as two matrix products: (h, w[, C])."""
    def weights(n_fine, n):
        k = np.arange(n_fine)
        lo, hi = np.arange(n)[:, None] * n_fine / n, (np.arange(n)[:, None] + 1) * n_fine / n
        return np.clip(np.minimum(hi, k + 1) - np.maximum(lo, k), 0, None) / (n_fine / n)

    a = np.asarray(image, np.float64)
    return np.einsum("ik,kl...,jl->ij...", weights(a.shape[0], shape[0]), a, weights(a.shape[1], shape[1]))


def test_area_average_by_hand_in_2d():
    """3 x 3 over 2 x 2 (x1.5 both ways): coarse (0, 0) takes rows and columns with weights
    (1, 0.5, 0), so (1 + 0.5 * 2 + 0.5 * 4 + 0.25 * 5) / 2.25 = 7/3; likewise 11/3, 19/3, 23/3.
    The module and the independent ``overlap_mean`` give these hand values."""
    a = np.arange(1.0, 10.0).reshape(3, 3)
    hand = np.array([[7, 11], [19, 23]]) / 3
    np.testing.assert_allclose(area_average(a, (2, 2)), hand, rtol=0, atol=1e-14)
    np.testing.assert_allclose(overlap_mean(a, (2, 2)), hand, rtol=0, atol=1e-14)
    # anisotropic, 2 x 5 over 1 x 2 (x2 rows, x2.5 columns): both rows, columns as in the 1-D case
    b = np.array([[1.0, 2, 3, 4, 5], [11, 12, 13, 14, 15]])
    hand = [[(6 + 7 + 0.5 * 8) / 2.5, (0.5 * 8 + 9 + 10) / 2.5]]  # column means 6 7 8 9 10
    np.testing.assert_allclose(area_average(b, (1, 2)), hand, rtol=0, atol=1e-14)
    np.testing.assert_allclose(overlap_mean(b, (1, 2)), hand, rtol=0, atol=1e-14)


def test_area_average_is_the_block_mean_at_integer_scales():
    rng = np.random.default_rng(0)
    a = rng.random((12, 18))
    expect = a.reshape(4, 3, 6, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(area_average(a, (4, 6)), expect, rtol=0, atol=1e-15)
    expect = a.reshape(6, 2, 3, 6).mean(axis=(1, 3))  # anisotropic: x2 rows, x6 columns
    np.testing.assert_allclose(area_average(a, (6, 3)), expect, rtol=0, atol=1e-15)


def test_area_average_weights_straddling_pixels_by_their_overlap():
    # 3 fine pixels over 2 coarse ones: each fine pixel is 2/3 of a coarse one; the middle one
    # lies half in each: coarse 0 = (2/3) * 3 + (1/3) * 6 = 4, coarse 1 = (1/3) * 6 + (2/3) * 9 = 8
    row = np.array([[3.0, 6.0, 9.0]])
    np.testing.assert_allclose(area_average(row, (1, 2)), [[4.0, 8.0]], rtol=0, atol=1e-14)
    # 5 over 2 (x2.5): coarse 0 = (2 * 1 + 2 * 2 + 0.5 * 3) / 2.5
    row = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    np.testing.assert_allclose(area_average(row, (1, 2)), [[(1 + 2 + 1.5) / 2.5, (1.5 + 4 + 5) / 2.5]], atol=1e-14)


@pytest.mark.parametrize("in_hw, out_hw", [((9, 7), (18, 21)),  # x2, x3
                                           ((9, 7), (13, 20)),  # x1.44, x2.86
                                           ((10, 10), (25, 25)),  # x2.5
                                           ((6, 8), (6, 31)),  # x1 rows, x3.875 columns
                                           ((1, 1), (5, 3))])
def test_preserve_flux_is_exact_at_integer_and_fractional_scales(in_hw, out_hw):
    rng = np.random.default_rng(1)
    image = rng.uniform(100, 4000, in_hw)
    output = rng.uniform(0, 5000, out_hw)  # far from consistent: a hard case
    fixed = preserve_flux(output, image)
    assert fixed.shape == out_hw and fixed.dtype == np.float64
    err = np.abs(overlap_mean(fixed, in_hw) - image).max()
    assert err < 1e-9, err


def test_correction_is_the_blocks_residual_at_integer_scale_and_nothing_when_consistent():
    rng = np.random.default_rng(2)
    image = rng.uniform(0, 1, (5, 6))
    output = rng.uniform(0, 1, (10, 18))
    residual = image - output.reshape(5, 2, 6, 3).mean(axis=(1, 3))
    expect = output + np.kron(residual, np.ones((2, 3)))  # the smallest correction spreads it evenly
    np.testing.assert_allclose(preserve_flux(output, image), expect, atol=1e-14)
    # an output that already keeps the flux is left as it is (fractional scale, too)
    consistent = preserve_flux(rng.uniform(0, 1, (13, 17)), image)
    np.testing.assert_allclose(preserve_flux(consistent, image), consistent, atol=1e-12)


def test_correction_is_the_least_squares_one():
    """Any other consistent output differs from the original by more (the correction is the
    projection onto the consistent outputs): compare with the correction plus a null-space move."""
    rng = np.random.default_rng(3)
    image, output = rng.random((4, 5)), rng.random((9, 12))
    fixed = preserve_flux(output, image)
    move = preserve_flux(rng.standard_normal(output.shape), np.zeros((4, 5)))  # area averages all 0
    other = fixed + move
    np.testing.assert_allclose(overlap_mean(other, (4, 5)), image, atol=1e-12)
    # Pythagoras: the correction is orthogonal to every such move
    d_fixed, d_other = np.sum((fixed - output) ** 2), np.sum((other - output) ** 2)
    assert d_other == pytest.approx(d_fixed + np.sum(move ** 2), rel=1e-10)


def test_colour_channels_are_corrected_independently():
    rng = np.random.default_rng(4)
    image, output = rng.random((6, 7, 3)), rng.random((15, 16, 3))
    fixed = preserve_flux(output, image)
    for c in range(3):
        np.testing.assert_allclose(fixed[..., c], preserve_flux(output[..., c], image[..., c]), atol=1e-14)
    assert np.abs(overlap_mean(fixed, (6, 7)) - image).max() < 1e-12


def test_uint16_at_integer_scale_keeps_every_block_sum_exactly():
    rng = np.random.default_rng(5)
    image = rng.integers(200, 3000, (7, 9)).astype(np.uint16)
    output = np.kron(image.astype(float), np.ones((4, 2))) + rng.normal(0, 80, (28, 18))
    fixed = preserve_flux(output, image, dtype=np.uint16)
    assert fixed.dtype == np.uint16
    sums = fixed.astype(np.int64).reshape(7, 4, 9, 2).sum(axis=(1, 3))
    np.testing.assert_array_equal(sums, image.astype(np.int64) * 8)
    # and the rounding moved no pixel by more than one count from the float correction
    assert np.abs(fixed - preserve_flux(output, image)).max() < 1.0


def test_uint16_at_fractional_scale_is_within_half_a_count():
    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[:8, :8]
    image = (1000 + 60 * yy + 40 * xx + rng.integers(-30, 30, (8, 8))).astype(np.uint16)
    rows, cols = (np.arange(19) * 8) // 19, (np.arange(21) * 8) // 21  # nearest input pixel
    output = image[rows][:, cols] + rng.normal(0, 20, (19, 21))
    fixed = preserve_flux(output, image, dtype=np.uint16)
    assert np.abs(overlap_mean(fixed, (8, 8)) - image).max() <= 0.5


def test_bad_input_is_refused_with_the_values():
    with pytest.raises(ValueError, match="got 4 output rows for 5 input rows"):
        preserve_flux(np.zeros((4, 8)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="the input has 1 NaN or infinite values"):
        preserve_flux(np.zeros((4, 4)), np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"output of shape \(4, 4, 3\) and input of shape \(2, 2\) differ"):
        preserve_flux(np.zeros((4, 4, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="bool"):
        preserve_flux(np.zeros((4, 4)), np.zeros((2, 2)), dtype=bool)


def test_check_preservable_refuses_before_any_work():
    from napari_liif.flux import check_preservable

    check_preservable(np.zeros((4, 4), np.uint16), (4, 4), (10, 9))  # fine
    with pytest.raises(ValueError, match="bool"):
        check_preservable(np.zeros((4, 4), bool), (4, 4), (8, 8))
    with pytest.raises(ValueError, match="got 3 output columns for 4 input ones"):
        check_preservable(np.zeros((4, 4)), (4, 4), (8, 3))
    with pytest.raises(ValueError, match="the image has 2 NaN or infinite values"):
        check_preservable(np.array([[np.nan, np.inf], [0.0, 1.0]]), (2, 2), (4, 4))


# --------------------------------------------------------------------------------- through upscale()


@pytest.mark.parametrize("scale", [2, 2.5, (3, 1.6)])
def test_upscale_with_preserve_flux_is_exact_at_integer_and_fractional_scales(small_net, as_model, scale):
    from napari_liif import upscale

    """Exact, and inside the input's range. (The image is a ramp with noise: in uniform noise, an
    input pixel at the range's top beside one near its bottom can share an output pixel with it at
    fractional scales, and no in-range output keeps both averages; test_outliers.py.)"""
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[:12, :10]
    img = 1000 + 200 * yy + 100 * xx + rng.uniform(-50, 50, (12, 10))  # float64: exact to rounding
    model = as_model(*small_net)
    out = upscale(img, scale=scale, model=model, preserve_flux=True)
    assert np.abs(overlap_mean(out, img.shape) - img).max() < 1e-9 * 4000
    assert img.min() <= out.min() and out.max() <= img.max()
    plain = upscale(img, scale=scale, model=model)
    assert np.abs(overlap_mean(plain, img.shape) - img).max() > 1.0  # the option is what makes it exact


def test_upscale_uint16_stack_with_preserve_flux_keeps_block_sums(small_net, as_model):
    from napari_liif import upscale

    rng = np.random.default_rng(10)
    stack = (1000 + 200 * rng.random((2, 9, 8))).astype(np.uint16)
    out = upscale(stack, scale=2, model=as_model(*small_net), preserve_flux=True)
    assert out.dtype == np.uint16
    sums = out.astype(np.int64).reshape(2, 9, 2, 8, 2).sum(axis=(2, 4))
    np.testing.assert_array_equal(sums, 4 * stack.astype(np.int64))


def test_upscale_refuses_what_flux_preservation_cannot_do(small_net, as_model):
    from napari_liif import upscale

    model = as_model(*small_net)
    with pytest.raises(ValueError, match="scale of at least 1"):
        upscale(np.ones((8, 8)) * np.arange(8), scale=0.5, model=model, preserve_flux=True)
    img = np.arange(16.0).reshape(4, 4)
    img[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        upscale(img, scale=2, model=model, preserve_flux=True)


def test_cli_preserve_flux(tmp_path, own_safetensors, capsys):
    import tifffile

    from napari_liif.cli import main

    rng = np.random.default_rng(11)
    img = (500 + 3000 * rng.random((10, 12))).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", img)
    path, _, _ = own_safetensors
    rc = main(["upscale", str(tmp_path / "in.tif"), "--scale", "3", "--checkpoint", str(path), "--preserve-flux",
               "-o", str(tmp_path / "out.tif"), "--quiet"])
    assert rc == 0
    out = tifffile.imread(tmp_path / "out.tif").astype(np.int64)
    np.testing.assert_array_equal(out.reshape(10, 3, 12, 3).sum(axis=(1, 3)), 9 * img.astype(np.int64))
    capsys.readouterr()
    rc = main(["upscale", str(tmp_path / "in.tif"), "--scale", "2", "--preserve-flux", "--dask",
               "-o", str(tmp_path / "o.zarr")])
    assert rc == 2 and "--preserve-flux is not available with --dask" in capsys.readouterr().err
