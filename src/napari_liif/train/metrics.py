"""Image quality metrics on float images in [0, 1] (numpy, channel-last or 2D)."""

from __future__ import annotations

import numpy as np


def _shave(a: np.ndarray, shave: int) -> np.ndarray:
    return a[shave:-shave, shave:-shave] if shave > 0 else a


def psnr(pred: np.ndarray, truth: np.ndarray, shave: int = 0, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ignoring ``shave`` border pixels."""
    p, t = _shave(np.asarray(pred, np.float64), shave), _shave(np.asarray(truth, np.float64), shave)
    if p.shape != t.shape:
        raise ValueError(f"shapes differ: {p.shape} vs {t.shape}")
    mse = np.mean((p - t) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(pred: np.ndarray, truth: np.ndarray, shave: int = 0) -> float:
    """Structural similarity (Wang et al. 2004; Gaussian window, sigma 1.5) via scikit-image."""
    from skimage.metrics import structural_similarity

    p, t = _shave(np.asarray(pred, np.float64), shave), _shave(np.asarray(truth, np.float64), shave)
    return float(structural_similarity(p, t, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, channel_axis=-1 if p.ndim == 3 else None))


def mean_bias(pred: np.ndarray, reference: np.ndarray) -> float:
    """Relative difference of the means, ``mean(pred) / mean(reference) - 1`` (whole images; for an
    upscaled image and its input, the output's mean is its area average over the whole input)."""
    ref = float(np.mean(np.asarray(reference, np.float64)))
    if ref == 0:
        raise ValueError("the reference image has mean 0; a relative bias is undefined")
    return float(np.mean(np.asarray(pred, np.float64))) / ref - 1.0


def highpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """``img`` minus its Gaussian blur of ``sigma`` pixels (per channel; mirrored borders)."""
    from scipy.ndimage import gaussian_filter

    a = np.asarray(img, np.float64)
    s = (sigma, sigma, 0) if a.ndim == 3 else sigma
    return a - gaussian_filter(a, s, mode="reflect")


def background_noise_gain(pred: np.ndarray, base: np.ndarray, truth: np.ndarray, scale: float,
                          shave: int = 0, fraction: float = 1 / 3) -> float:
    """High-pass energy of ``pred`` in the background relative to that of ``base`` (e.g. bicubic).

    Background: the darkest ``fraction`` of the pixels of ``truth`` (gray, or the channel mean).
    High-pass: the image minus its Gaussian blur of ``scale`` output pixels (one input pixel), so
    the energy counts everything finer than an input pixel: noise passed on or sharpened, and
    patterns made up. Energy: the mean squared high-pass over the background, after ``shave``
    border pixels. 1.0 means as noisy as ``base``; below 1 quieter.
    """
    t = np.asarray(truth, np.float64)
    t = t.mean(-1) if t.ndim == 3 else t
    mask = np.zeros(t.shape, bool)
    inner = _shave(t, shave)
    cut = np.quantile(inner, fraction)
    sl = (slice(shave, -shave), slice(shave, -shave)) if shave > 0 else (slice(None), slice(None))
    mask[sl] = inner <= cut
    e_pred = np.mean(highpass(pred, scale)[mask] ** 2)
    e_base = np.mean(highpass(base, scale)[mask] ** 2)
    return float(e_pred / e_base) if e_base > 0 else float("inf")


LOWPASS_SIGMA = 1.0  # output pixels: the low-passed reference's Gaussian


def lowpass(img: np.ndarray, sigma: float = LOWPASS_SIGMA) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (2D; mirrored borders): the low-passed reference and output.

    A Gaussian of sigma 1 output pixel lowers white noise's power 4 pi sigma**2 = 12.6 times and keeps
    structure coarser than about 2 pixels (a PSF of FWHM 2 px widens by 31 %), so PSNR between the
    low-passed output and the low-passed reference rewards recovered structure, not noise copied from a
    noisy reference."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(img, np.float64), sigma, mode="reflect")


def psnr_lowpass(pred: np.ndarray, truth: np.ndarray, shave: int = 0, sigma: float = LOWPASS_SIGMA) -> float:
    """PSNR (data range 1) of ``lowpass(pred)`` against ``lowpass(truth)``, ``shave`` border pixels ignored
    (blur first, then shave, so the mirrored border does not reach the scored pixels when shave > 3 sigma)."""
    return psnr(lowpass(pred, sigma), lowpass(truth, sigma), shave)


def dark_floor(pred: np.ndarray, inp: np.ndarray, q: float = 1.0) -> float:
    """How far the ``q``-th percentile (default the 1st) of ``pred`` sits above that of ``inp``, in percent
    of the input's range (max - min): 0 keeps the input's dark floor, positive lifts it."""
    a = np.asarray(inp, np.float64)
    span = float(a.max() - a.min())
    if span == 0:
        raise ValueError("the input is constant; its dark floor relative to its range is undefined")
    return float(100 * (np.percentile(np.asarray(pred, np.float64), q) - np.percentile(a, q)) / span)
