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
