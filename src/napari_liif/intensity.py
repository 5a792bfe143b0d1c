"""Mapping image intensities to the model's [0, 1] range and back, invertibly.

* ``uint8`` (and ``bool``): the dtype range, ``v / 255``;
* every other dtype (uint16, other integers, floats): the finite data range
  ``(v - lo) / (hi - lo)`` with ``lo, hi`` the minimum and maximum of the finite values, so
  nothing is clipped and the inverse ``v = u * (hi - lo) + lo`` restores the original range.
  A constant image (``hi == lo``) maps to 0, and every value maps back to that constant.
  For the model, NaN counts as ``lo``, +inf as ``hi`` and -inf as ``lo`` (an upscaled image
  has no one-to-one pixel to keep them in).

The forward map is computed in float64 and only then rounded to float32, so integer data
far from zero (e.g. int32 values around 1e9 with a small range) keeps its detail.

Integer outputs are rounded and clipped to their dtype; float outputs keep their dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntensityMap:
    lo: float
    hi: float
    dtype: np.dtype

    @classmethod
    def fit(cls, data: np.ndarray, lo: float | None = None, hi: float | None = None) -> "IntensityMap":
        """The map for ``data`` (``lo``/``hi`` override the data range, e.g. napari contrast limits)."""
        dtype = np.dtype(data.dtype)
        if dtype.kind not in "biuf":
            raise TypeError(f"cannot upscale data of dtype {dtype}; expected integer, float or bool data")
        if lo is None or hi is None:
            if dtype == np.uint8 or dtype.kind == "b":
                dlo, dhi = 0.0, 255.0 if dtype == np.uint8 else 1.0
            else:
                finite = data[np.isfinite(data)] if dtype.kind == "f" else data
                dlo, dhi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            lo = dlo if lo is None else lo
            hi = dhi if hi is None else hi
        return cls(float(lo), float(hi), dtype)

    @property
    def span(self) -> float:
        return self.hi - self.lo if self.hi > self.lo else 1.0

    def forward(self, data: np.ndarray) -> np.ndarray:
        """Data -> float32 in [0, 1] (values outside [lo, hi] are clipped for the model only)."""
        a = np.asarray(data)
        work = np.float32 if a.dtype in (np.float32, np.float16, np.bool_, np.uint8) else np.float64
        u = (a.astype(work) - work(self.lo)) / work(self.span)
        if self.dtype.kind == "f":
            u = np.nan_to_num(u, nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(u, 0.0, 1.0).astype(np.float32, copy=False)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        """Float in [0, 1] -> the original dtype and range (a constant map gives its constant)."""
        span = self.hi - self.lo if self.hi > self.lo else 0.0
        v = np.asarray(u, np.float64) * span + self.lo
        if self.dtype.kind == "b":
            return v >= 0.5
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            return np.clip(np.rint(v), info.min, info.max).astype(self.dtype)
        return v.astype(self.dtype)


def to_unit_float(data: np.ndarray) -> np.ndarray:
    """Convenience: ``IntensityMap.fit(data).forward(data)``."""
    return IntensityMap.fit(data).forward(data)
