"""Issue 19 item 5: the microscopy data covers real acquisition (noise from none to strong, offsets,
PSF sizes, dim and bright channels), the held-out sets (low-noise, noisy, binned with a noisy
reference), and the honesty metrics (PSNR against a low-passed reference, the dark floor) and the
dark-floor training term, against values worked out by hand or written from the equations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_liif.flux import area_average
from napari_liif.train import microscopy as mic
from napari_liif.train.metrics import dark_floor, lowpass, psnr, psnr_lowpass

# --------------------------------------------------------------------------------- cameras


def test_wide_cameras_span_strong_noise_to_none():
    cams = [mic.Camera.random(np.random.default_rng((21, k))) for k in range(600)]
    photons = np.array([c.photons for c in cams])
    lo, hi = mic.PHOTON_RANGE
    assert photons.min() >= lo and photons.max() <= hi
    assert photons.min() < 3 and photons.max() > 1e5  # both ends reached
    # log-uniform: a third of the draws in each third of the log range (600 draws: +-0.06 is > 3 sigma)
    thirds = np.histogram(np.log(photons), bins=3, range=(math.log(lo), math.log(hi)))[0] / len(cams)
    np.testing.assert_allclose(thirds, 1 / 3, atol=0.06)
    share = np.mean([not c.noise for c in cams])
    assert abs(share - mic.NOISELESS_SHARE) < 0.05
    offsets = np.array([c.offset for c in cams])
    assert 0.06 < np.mean(offsets == 0) < 0.14 and offsets.max() > 1000  # background-subtracted and high
    gains = np.array([c.gain for c in cams])
    assert gains.min() < 0.25 and gains.max() > 4.0


def test_noiseless_camera_records_the_rounded_expected_value():
    cam = mic.Camera(photons=1.0, gain=0.5, offset=100.0, read_noise=3.0, noise=False)
    x = cam.expose(np.array([[0.0, 3.0, 1000.0]]), np.random.default_rng(0))
    np.testing.assert_array_equal(x, [[100, 102, 600]])  # 101.5 rounds to even (102), 600 exact
    assert x.dtype == np.uint16


def test_gain_is_lowered_so_the_brightest_pixel_stays_in_16_bits():
    cam = mic.Camera(photons=1e5, gain=2.0, offset=200.0, read_noise=1.0)
    fitted = cam.within_range(1e6)  # 200 + 2e6 ADU would saturate
    assert fitted.gain == pytest.approx((0.9 * 65535 - 200) / 1e6, rel=1e-12)
    assert fitted.offset + fitted.gain * 1e6 == pytest.approx(0.9 * 65535, rel=1e-12)
    assert cam.within_range(1000.0) is cam  # 2200 ADU: unchanged
    peak = cam.within_range(1e6, np.random.default_rng(3))
    assert 0.3 * 65535 <= peak.offset + peak.gain * 1e6 <= 0.9 * 65535


# --------------------------------------------------------------------------------- held-out sets


def _relative_noise(sc) -> float:
    """Noise of the input against its noise-free value, over the clean input's range."""
    lr_clean = area_average(sc["clean"], sc["lr"].shape)
    return float(np.std(sc["lr"].astype(np.float64) - lr_clean) / np.ptp(lr_clean))


def test_held_out_low_noise_inputs_are_nearly_clean_and_noisy_ones_are_not():
    low = [_relative_noise(mic.held_out_scene(k, 2, (96, 96), kind="low")) for k in range(4)]
    noisy = [_relative_noise(mic.held_out_scene(k, 2, (96, 96), kind="noisy")) for k in range(4)]
    assert max(low) < 0.005  # under half a percent of the range
    assert min(noisy) > 0.02
    a, b = mic.held_out_scene(1, 2, (96, 96), kind="low"), mic.held_out_scene(1, 2, (96, 96), kind="noisy")
    np.testing.assert_allclose((a["clean"] - a["camera"].offset) / (a["camera"].gain * a["camera"].photons),
                               (b["clean"] - b["camera"].offset) / (b["camera"].gain * b["camera"].photons),
                               rtol=1e-9)  # the same scene behind both


def test_binned_held_out_scenes_bin_a_noisy_reference():
    sc = mic.held_out_scene(2, 4, (96, 96), kind="binned")
    ref = sc["hr"]
    assert np.array_equal(ref, np.rint(ref)) and not np.allclose(ref, sc["clean"])  # a noisy 16-bit image
    np.testing.assert_allclose(sc["lr"], ref.reshape(24, 4, 24, 4).mean(axis=(1, 3)), rtol=1e-12)
    # the reference's noise: Poisson-Gaussian at HR, variance gain^2 (photons + read^2) around the clean image
    cam = sc["camera"]
    var = cam.gain ** 2 * ((sc["clean"] - cam.offset) / cam.gain + cam.read_noise ** 2) + 1 / 12
    z = (ref - sc["clean"]) / np.sqrt(var)
    assert abs(z.mean()) < 0.05 and z.std() == pytest.approx(1.0, abs=0.05)


def test_held_out_set_has_every_kind_and_the_legacy_set_is_the_first_models():
    scenes = mic.held_out_scenes(4, n=2, shape=(48, 48))
    assert [(sc["kind"], sc["seed"]) for sc in scenes] == [
        ("low", 0), ("low", 1), ("noisy", 0), ("noisy", 1), ("binned", 0), ("binned", 1)]
    leg = mic.held_out_scene(0, 2, (48, 48), kind="legacy")
    assert 50 <= leg["camera"].offset < 500 and 4 <= leg["camera"].photons <= 1000  # the first model's cameras
    assert 1.4 <= leg["params"].fwhm <= 3.4
    with pytest.raises(ValueError, match="kind must be"):
        mic.held_out_scene(0, 2, (48, 48), kind="clean")


# --------------------------------------------------------------------------------- metrics


def _gaussian_blur_by_hand(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable convolution with a normalised Gaussian sampled out to 4 sigma, mirrored borders
    ('symmetric': the edge pixel repeated, as scipy's 'reflect')."""
    r = int(4 * sigma + 0.5)
    x = np.arange(-r, r + 1)
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    p = np.pad(img, r, mode="symmetric")
    rows = sum(g[i] * p[:, i:i + img.shape[1]] for i in range(2 * r + 1))
    return sum(g[i] * rows[i:i + img.shape[0], :] for i in range(2 * r + 1))


def test_lowpass_is_a_gaussian_of_one_output_pixel():
    img = np.random.default_rng(4).random((40, 50))
    np.testing.assert_allclose(lowpass(img), _gaussian_blur_by_hand(img, 1.0), atol=1e-12)


def test_psnr_against_the_low_passed_reference_ignores_most_of_a_references_noise():
    """White noise of std 0.05 around a flat reference: PSNR 26.02 dB. Blurred by a Gaussian of sigma 1, the
    noise's power falls by the kernel's sum of squares, (sum g_i^2)^2 = 0.0796 (1 / (4 pi) = 0.0796 for the
    continuous kernel): +11.0 dB."""
    rng = np.random.default_rng(5)
    truth = np.full((400, 400), 0.5)
    noisy = truth + 0.05 * rng.standard_normal(truth.shape)
    assert psnr(truth, noisy, 7) == pytest.approx(-20 * math.log10(0.05), abs=0.05)
    gain = psnr_lowpass(truth, noisy, 7) - psnr(truth, noisy, 7)
    assert gain == pytest.approx(10 * math.log10(4 * math.pi), abs=0.15)
    # a sharp edge blurred alike in both images compares equal: the filter is applied to both
    edge = np.zeros((40, 40))
    edge[:, 20:] = 1.0
    assert psnr_lowpass(edge, edge, 7) == float("inf")


def test_dark_floor_in_percent_of_the_input_range():
    inp = np.arange(101.0).reshape(1, -1)  # 0..100: 1st percentile 1.0, range 100
    assert dark_floor(inp + 2.0, inp) == pytest.approx(2.0, abs=1e-12)  # floor lifted by 2 % of the range
    assert dark_floor(inp, inp) == 0.0
    out = np.concatenate([np.full(10, 1.0), np.linspace(50, 60, 90)])  # 1st percentile of the output: 1.0
    assert dark_floor(out, inp) == pytest.approx(0.0, abs=1e-12)
    assert dark_floor(np.full(50, 0.5), inp * 4) == pytest.approx(100 * (0.5 - 4.0) / 400, abs=1e-12)
    with pytest.raises(ValueError, match="constant"):
        dark_floor(inp, np.ones(5))


def test_floor_loss_compares_the_first_percentiles():
    import torch

    gt = torch.arange(101.0).reshape(1, 101, 1).expand(2, 101, 3).clone()  # 1st percentile 1.0 per sample
    pred = gt.clone()
    pred[0] += 0.5  # sample 0: floor lifted by 0.5
    pred[1, 50:] -= 30.0  # sample 1: bright half changed, floor (the two darkest values) kept
    assert float(mic.floor_loss(pred, gt)) == pytest.approx(mic.FLOOR_WEIGHT * 0.5 / 2, abs=1e-6)


# --------------------------------------------------------------------------------- training patches


def test_training_patches_include_exact_range_inputs_and_clean_ones():
    import random

    src = mic.MicroscopyPatches(seed=8, pool=2, side=112)
    rng = random.Random(2)
    samples = [src.sample(24, (2.0, 2.0), 0, rng) for _ in range(40)]
    exact = np.mean([float(s["inp"].min()) == -1.0 and float(s["inp"].max()) == 1.0 for s in samples])
    assert 0.3 < exact < 0.7  # half the patches in the input's exact range


def test_held_out_scenes_written_as_tiffs_per_set(tmp_path):
    import json

    import tifffile

    written = mic.write_held_out(tmp_path, scales=(2,), shape=(24, 24))
    assert len(written) == len(mic.HELD_OUT_SEEDS) * 3 * 3  # seeds x sets x (lr, hr, clean)
    sc = mic.held_out_scene(3, 2, (24, 24), kind="binned")
    lr = tifffile.imread(tmp_path / "scene3_binned_x2_lr.tif")
    assert lr.dtype == np.float32
    np.testing.assert_allclose(lr, sc["lr"], rtol=1e-6)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "scene3_low_x2_lr.tif"),
                                  mic.held_out_scene(3, 2, (24, 24), kind="low")["lr"])
    meta = json.loads((tmp_path / "scenes.json").read_text())
    assert meta["scene3_binned_x2"]["camera"]["photons"] == pytest.approx(sc["camera"].photons)
