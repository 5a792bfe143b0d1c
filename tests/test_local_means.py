"""Local means kept (``preserve_flux="local"``, :mod:`napari_liif.local_means`): the smoothing and
the interpolation against references written here, exact results where the residual is smooth,
the input's pixel-scale noise mostly not put back, carried outliers held, and the bundled
microscopy model's bias on a held-out noisy scene removed."""

from __future__ import annotations

import numpy as np
import pytest

from napari_liif import upscale
from napari_liif.flux import area_average, preserve_flux
from napari_liif.local_means import bilinear_axis0, gaussian_axis0, keep_local_means


def test_gaussian_equals_a_convolution_of_the_mirrored_signal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(11, 3))
    for sigma in (0.5, 1.0, 2.0):
        r = int(np.ceil(3 * sigma))
        taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        taps /= taps.sum()
        padded = np.pad(x, ((r, r), (0, 0)), mode="reflect")  # d c b | a b c d | c b a
        want = np.stack([np.convolve(padded[:, c], taps, mode="valid") for c in range(3)], 1)
        np.testing.assert_allclose(gaussian_axis0(x, sigma), want, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(gaussian_axis0(x, 0), x)


def test_bilinear_reads_the_input_centres_at_the_output_centres():
    # 2 -> 4: output centres at input coordinates -0.25, 0.25, 0.75, 1.25 (held at the ends)
    np.testing.assert_allclose(bilinear_axis0(np.array([0.0, 1.0]), 4), [0.0, 0.25, 0.75, 1.0])
    # 3 -> 6: centres at -0.25, 0.25, 0.75, 1.25, 1.75, 2.25
    np.testing.assert_allclose(bilinear_axis0(np.array([0.0, 2.0, 4.0]), 6), [0, 0.5, 1.5, 2.5, 3.5, 4])


def test_a_uniform_bias_is_removed_exactly_and_a_slope_within_float_rounding():
    yy, xx = np.mgrid[0:64, 0:48] / 64.0
    truth = 100 + 50 * np.sin(6 * yy) * np.cos(5 * xx)
    image = area_average(truth, (16, 12))  # x4
    np.testing.assert_allclose(keep_local_means(truth + 7.5, image), truth, rtol=0, atol=1e-10)
    ramp = 0.3 * np.arange(64)[:, None] + np.zeros((1, 48))  # a residual linear in y: kept linear
    fixed = keep_local_means(truth + ramp, image)
    inner = (slice(16, -16), slice(16, -16))  # 4 input px from the ends, where the mirroring bends it
    np.testing.assert_allclose(fixed[inner], truth[inner], rtol=0, atol=1e-9)


def test_the_inputs_pixel_noise_is_mostly_not_put_back():
    """A model that removed all the noise: exact flux puts each input pixel's noise back over its
    footprint; local means put back its smooth part only (a 1-pixel Gaussian keeps ~28 % of white
    noise's amplitude in 2-D)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:192, 0:192] / 192.0
    clean = 1000 + 400 * np.sin(7 * yy + 3 * xx)
    image = area_average(clean, (96, 96)) + rng.normal(0, 20, (96, 96))
    back_exact = np.std(area_average(preserve_flux(clean, image) - clean, (96, 96)))
    back_local = np.std(area_average(keep_local_means(clean, image) - clean, (96, 96)))
    assert 19 < back_exact < 21  # all of it
    assert back_local < 0.35 * back_exact
    # and the mean is the input's, up to the ends' mirroring (1e-5 of it here)
    assert abs(keep_local_means(clean, image).mean() / image.mean() - 1) < 1e-4


def test_carried_outliers_are_held_and_left_out_of_the_smoothing():
    image = np.full((8, 8), 10.0)
    image[3, 4] = 60000.0  # a hot pixel
    hot = image == 60000.0
    out = np.full((16, 16), 13.0)  # the model: 3 too bright everywhere
    out[6:8, 8:10] = 60000.0  # the hot pixel carried on its footprint
    got = keep_local_means(out, image, outliers=hot)
    np.testing.assert_array_equal(got[6:8, 8:10], 60000.0)  # held
    rest = np.ones((16, 16), bool)
    rest[6:8, 8:10] = False
    np.testing.assert_allclose(got[rest], 10.0, rtol=0, atol=1e-9)  # the hot pixel spread nothing
    # bounds clip what is not held; integer outputs are rounded
    low = keep_local_means(out - 20, image, outliers=hot, bounds=(0, 65535))
    assert low[rest].min() >= 0
    ints = keep_local_means(out + 0.4, image, np.uint16, outliers=hot)
    assert ints.dtype == np.uint16 and np.all(ints[rest] == 10) and np.all(ints[6:8, 8:10] == 60000)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="do not match"):
        keep_local_means(np.zeros((8, 8)), np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="scale of at least 1"):
        keep_local_means(np.zeros((4, 4)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="the output has 64 NaN"):
        keep_local_means(np.full((8, 8), np.nan), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"preserve_flux must be False, True \(\"exact\"\) or \"local\", got 'yes'"):
        upscale(np.zeros((8, 8), np.uint16), scale=2, preserve_flux="yes")


def test_integer_rounding_keeps_each_blocks_sum():
    from napari_liif.local_means import round_keeping_sums

    v = np.array([[0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3]])  # two 2x2 blocks of sum 1.2
    got = round_keeping_sums(v, (1, 2), np.zeros(v.shape, bool))
    np.testing.assert_array_equal(got.reshape(2, 2, 2).sum((0, 2)), [1, 1])  # plain rounding: 0 and 0
    v = np.array([[1.2, 1.9], [0.4, 0.6]])  # sum 4.1: floors 1, 1, 0, 0; one more up: the 0.9
    np.testing.assert_array_equal(round_keeping_sums(v, (1, 1), np.zeros(v.shape, bool)), [[1, 2], [0, 1]])
    fixed = np.array([[False, True], [False, False]])  # 1.9 left to plain rounding (2); 1.2+0.4+0.6 -> 2
    np.testing.assert_array_equal(round_keeping_sums(v, (1, 1), fixed), [[1, 2], [0, 1]])
    np.testing.assert_array_equal(round_keeping_sums(v, (2, 1), np.zeros(v.shape, bool)), np.rint(v))  # x1


@pytest.mark.slow
def test_the_microscopy_model_loses_no_mean_on_dim_noisy_held_out_scenes():
    """The bundled microscopy model on two held-out noisy scenes at x2, background-subtracted
    (offset 0: half the pixels 0, a mean of 4 ADU): alone, uint16 out, it loses 4-5 % of the mean
    (the model, and values under 0.5 rounded to 0); with local means kept and sums-keeping rounding
    under 1 %, and its background quieter than with exact flux (which puts the noise back)."""
    from napari_liif.train.metrics import background_noise_gain, mean_bias
    from napari_liif.train.microscopy import held_out_scene

    for k in (2, 3):
        sc = held_out_scene(k, 2, kind="noisy")
        lr = sc["lr"]
        alone = upscale(lr, scale=2, model="microscopy").astype(np.float64)
        local = upscale(lr, scale=2, model="microscopy", preserve_flux="local").astype(np.float64)
        exact = upscale(lr, scale=2, model="microscopy", preserve_flux=True).astype(np.float64)
        assert mean_bias(alone, lr) < -0.04
        assert abs(mean_bias(local, lr)) < 0.007
    base = np.kron(lr.astype(np.float64), np.ones((2, 2)))
    noise = [background_noise_gain(x, base, sc["clean"], 2.0, shave=8) for x in (local, exact)]
    assert noise[0] < noise[1]


def test_the_command_line_keeps_local_means_and_names_its_choices(tmp_path, capsys):
    import tifffile

    from cli_helpers import one_line, run

    rng = np.random.default_rng(3)
    img = rng.poisson(4.0, (24, 24)).astype(np.uint16)  # dim: a mean of 4 counts, many zeros
    src = tmp_path / "dim.tif"
    tifffile.imwrite(src, img)
    rc, _, err = run(capsys, "upscale", src, "--scale", 2, "--checkpoint", "microscopy", "--preserve-flux", "local",
                     "-o", tmp_path / "out.tif", "--quiet")
    assert rc == 0, err
    out = tifffile.imread(tmp_path / "out.tif").astype(np.float64)
    # the model alone, rounded to uint16, reads this image 2.6 % dark; local means: 0.3 %
    assert abs(out.mean() / img.mean() - 1) < 0.01
    rc, _, err = run(capsys, "upscale", src, "--scale", 2, "--preserve-flux", "all", "-o", tmp_path / "x.tif")
    assert rc == 2 and "choose from 'exact', 'local'" in one_line(err)
