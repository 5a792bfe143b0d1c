"""Checks of what callers hand the engine, each a ``ValueError``/``TypeError`` naming the value.

Kept apart from the engine so that the rules are in one place and tested on their own:
:func:`check_render_args` for ``EncodedField.render(region, shape)`` and
:func:`check_unit_image` for ``LiifModel.encode(image)``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

#: how far outside [0, 1] encode() accepts values (float rounding of a [0, 1] mapping)
UNIT_TOLERANCE = 1e-3


def _real(v, what: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise ValueError(f"{what} must be a real number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return f


def check_region(region, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """``region`` as ``(top, left, bottom, right)`` floats, or a ValueError naming it.

    ``region`` is in input pixel-edge units (the whole image of ``shape`` = (H, W) is
    ``(0, 0, H, W)``); None means the whole image. It must be four finite real numbers with
    bottom > top and right > left, and overlap the image (it may reach past its edges, as
    live-zoom tiles at the border do).
    """
    h, w = int(shape[0]), int(shape[1])
    if region is None:
        return 0.0, 0.0, float(h), float(w)
    if isinstance(region, (str, bytes)) or not hasattr(region, "__len__") or len(region) != 4:
        raise ValueError(f"region must be (top, left, bottom, right), four numbers, got {region!r}")
    top, left, bottom, right = (_real(v, "region value") for v in region)
    if not (bottom > top and right > left):
        raise ValueError(f"region must be (top, left, bottom, right) with bottom > top and right > left, "
                         f"got {tuple(region)!r}")
    if bottom <= 0 or top >= h or right <= 0 or left >= w:
        raise ValueError(f"region {tuple(region)!r} lies outside the image, which spans (0, 0, {h}, {w}) "
                         "in pixel-edge units")
    return top, left, bottom, right


def check_shape(shape, default: tuple[int, int]) -> tuple[int, int]:
    """``shape`` as (rows, cols) of positive integers (None: ``default``), or a ValueError."""
    if shape is None:
        return int(default[0]), int(default[1])
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2:
        raise ValueError(f"shape must be (rows, cols) of positive integers, got {shape!r}")
    out = []
    for v in shape:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or int(v) < 1:
            raise ValueError(f"shape must be (rows, cols) of positive integers, got {shape!r}")
        out.append(int(v))
    return out[0], out[1]


def check_unit_image(a) -> np.ndarray:
    """``a`` as a real array whose values are all finite and in [0, 1] (within
    ``UNIT_TOLERANCE``), or an error that says what was found and what to do.

    ``encode`` takes intensities already mapped to [0, 1]: uint8 data in 0..255 would render
    as a white image, so it is refused here rather than silently clipped.
    """
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"encode expects real intensities in [0, 1], got dtype {a.dtype}; "
                        "napari_liif.upscale maps integer, bool and float data of any range")
    if a.size == 0 or a.dtype.kind == "b":
        return a
    lo, hi = np.min(a), np.max(a)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("encode expects finite intensities in [0, 1], got NaN or inf; "
                         "napari_liif.upscale handles NaN, inf and nodata")
    if lo < -UNIT_TOLERANCE or hi > 1 + UNIT_TOLERANCE:
        hint = " (uint8 data: divide by 255)" if a.dtype == np.uint8 or (a.dtype.kind in "iu" and hi <= 255) else ""
        raise ValueError(f"encode expects intensities in [0, 1], got values from {lo} to {hi} ({a.dtype}){hint}; "
                         "napari_liif.upscale maps any range")
    return a
