"""Mapping image intensities to the model's [0, 1] range and back, invertibly: the one mapping of
every path (``upscale()``, ``upscale_dask``, the CLI, live zoom, evaluation and training).

The limits ``[lo, hi]`` (``u = (v - lo) / (hi - lo)``, inverse ``v = u * (hi - lo) + lo``):

* ``uint8`` (and ``bool``): the dtype range, ``v / 255``;
* every other dtype (uint16, other integers, floats), by default the **robust range** of the
  *valid* values: their minimum and maximum, each trimmed to at most ``ROBUST_MARGIN`` (1) robust
  spans beyond the 0.1st and 99.9th percentiles (``p_lo``, ``p_hi``; span ``p_hi - p_lo``):
  ``hi = min(max, p_hi + span)``, ``lo = max(min, p_lo - span)``. Data without outliers keeps its
  exact range (nothing is clipped); a hot pixel (or a few hundred of them per megapixel), a dead
  pixel or a saturated speck no longer squeezes the image into a sliver of [0, 1], where a
  bf16 model would band it. The percentiles are exact up to ``SAMPLE_MAX`` values; bigger
  arrays use the regular sample ``a[..., ::k, ::k]`` (:func:`spatial_sample`), the same in memory
  and with dask.
* explicit options: ``limits=(lo, hi)`` (data values, e.g. napari contrast limits) or
  ``percentiles=(p_lo, p_hi)`` (of the valid values, no margin).

Values outside ``[lo, hi]`` (*out of range*) enter the model clipped to 0 or 1; in upscaled
images they are carried back by nearest neighbour, as masked values are (:func:`carry`), so a
hot pixel stays exactly what it was and no value is lost. A constant image (``hi == lo``) maps to
0, and every value maps back to that constant.

* **Valid values** are the finite ones that are not nodata. **Nodata** is the sentinel GIS
  rasters use for "no measurement": in float32 data any value with ``|v| >= 3.39e38`` (the float32
  extremes, -3.4028235e38 and -3.4e38 alike); in float64 data the same values
  (``3.39e38 <= |v| <= 3.41e38``) and float64's own extremes (``|v| >= 1.79e308``). NaN, +-inf and
  nodata (the *masked* values) neither widen the range nor reach the model as themselves: it sees
  NaN as ``lo``, +inf and positive nodata as ``hi``, -inf and negative nodata as ``lo``. They are
  not interpolated: :func:`carry` puts each masked value back wherever its pixel is the
  nearest input pixel of an output pixel, so NaN stays NaN and masked regions stay masked.
* The range never overflows: float64 data spanning more than float64's maximum is mapped at half
  scale; 64-bit integers are offset from ``lo`` in exact integer arithmetic, so neither end of
  their range wraps around and far-from-zero data keeps its detail.
* **Alpha** (the fourth channel of RGBA) is not fitted: its map is the dtype range for integers
  and [0, 1] for floats (:meth:`IntensityMap.alpha`), so that opaque means 1.

Every result lies within ``[lo, hi]`` (finite values) and its dtype, or is a carried input value:
integer outputs are rounded and clipped, float outputs keep their dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

NODATA32 = 3.39e38  # |v| at or above this is a float32 nodata sentinel (float32 max: 3.4028235e38)
NODATA32_TOP = 3.41e38  # ... and at or below this, in float64 data
NODATA64 = 1.79e308  # float64 max: 1.7976931348623157e308
ROBUST_PERCENTILES = (0.1, 99.9)  # the robust span's ends (percent of the valid values)
ROBUST_MARGIN = 1.0  # robust spans allowed beyond them before values count as outliers
SAMPLE_MAX = 1 << 22  # percentiles are exact up to this many values, else from a regular sample


def masked(a):
    """Boolean mask of the masked values of float data (NaN, +-inf, nodata), or None for other
    dtypes. Works on numpy and dask arrays alike."""
    dtype = np.dtype(a.dtype)
    if dtype.kind != "f":
        return None
    if dtype.itemsize < 4:
        return ~np.isfinite(a)  # float16 has no nodata sentinel of its own
    m = abs(a)  # NaN compares false below, so it is masked too
    if dtype.itemsize == 4:
        return ~(m < NODATA32)
    return ~(m < NODATA64) | ((m >= NODATA32) & (m <= NODATA32_TOP))


def valid_values(a: np.ndarray) -> np.ndarray:
    """The valid values of ``a``, flattened (copied only when something is masked)."""
    bad = masked(a)
    if bad is None or not bad.any():
        return np.asarray(a).ravel()
    return np.asarray(a)[~bad]


def sample_step(shape) -> int:
    """Stride ``k`` of the regular sample of an array of ``shape``: 1 (every value) up to
    ``SAMPLE_MAX`` values, else the smallest ``k`` whose ``[..., ::k, ::k]`` sample is no bigger."""
    n = math.prod(int(d) for d in shape)
    return max(1, math.ceil(math.sqrt(n / SAMPLE_MAX))) if n > SAMPLE_MAX else 1


def spatial_sample(a, colour: bool = False):
    """The regular sample ``a[..., ::k, ::k]`` (``[..., ::k, ::k, :]`` with a trailing ``colour``
    axis) that the percentiles are taken from; numpy and dask arrays alike, so both paths fit
    the same map. Arrays with fewer axes are sampled flat."""
    k = sample_step(a.shape)
    if k == 1:
        return a
    if a.ndim < 2 + colour:
        return a.reshape(-1)[:: k * k]
    return a[(Ellipsis, slice(None, None, k), slice(None, None, k)) + ((slice(None),) if colour else ())]


def _exact(v, dtype: np.dtype):
    """``v`` as a Python int for integer maps when it is integral (keeps 64-bit ends exact)."""
    if dtype.kind in "iu" and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    return float(v)


def check_options(limits=None, percentiles=None) -> None:
    """Refuse bad intensity options with one line naming the value (ValueError)."""
    if limits is not None and percentiles is not None:
        raise ValueError(f"give either limits or percentiles, not both (got limits={limits!r}, "
                         f"percentiles={percentiles!r})")
    for name, pair in (("limits", limits), ("percentiles", percentiles)):
        if pair is None:
            continue
        vals = list(pair) if isinstance(pair, (tuple, list, np.ndarray)) else []
        ok = len(vals) == 2 and all(isinstance(v, (int, float, np.integer, np.floating))
                                    and not isinstance(v, (bool, np.bool_)) and math.isfinite(float(v))
                                    for v in vals)
        if not ok:
            raise ValueError(f"{name} must be two finite numbers (low, high), got {pair!r}")
        if float(vals[0]) > float(vals[1]):
            raise ValueError(f"{name} must be (low, high) with low <= high, got {pair!r}")
        if name == "percentiles" and not 0 <= float(vals[0]) <= float(vals[1]) <= 100:
            raise ValueError(f"percentiles must lie between 0 and 100, got {pair!r}")


def parse_range(text: str) -> tuple:
    """``(limits, percentiles)`` from a widget's text: empty for the robust range, ``LOW,HIGH`` for
    data values, ``LOW%,HIGH%`` for percentiles; a ValueError naming the text otherwise."""
    t = (text or "").strip()
    if not t:
        return None, None
    parts = [p.strip() for p in t.split(",")]
    pct = [p.endswith("%") for p in parts]
    try:
        vals = tuple(float(p.rstrip("%")) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 2 or pct[0] != pct[1]:
        raise ValueError(f"intensity range must be empty (robust), LOW,HIGH or LOW%,HIGH%, got {text!r}")
    limits, percentiles = (None, vals) if pct[0] else (vals, None)
    check_options(limits, percentiles)
    return limits, percentiles


def _percentiles(sample: np.ndarray, p_lo: float, p_hi: float) -> tuple:
    """The ``p_lo`` percentile rounded down and the ``p_hi`` one rounded up to sample values
    (numpy's ``lower``/``higher`` methods: data values, never an interpolation that could
    overflow), from one partition."""
    n = sample.size
    k_lo = math.floor(p_lo / 100 * (n - 1))
    k_hi = math.ceil(p_hi / 100 * (n - 1))
    part = np.partition(sample, [k_lo, k_hi]) if k_lo != k_hi else np.partition(sample, k_lo)
    return part[k_lo], part[k_hi]


def choose_limits(dtype, vmin, vmax, sample: np.ndarray, percentiles=None) -> tuple:
    """``(lo, hi)`` from the valid extremes ``vmin``/``vmax`` and a sample of the valid values:
    the robust range (module docstring) or, with ``percentiles``, those percentiles exactly.
    Integer limits that are not the extremes themselves are widened to whole numbers."""
    dtype = np.dtype(dtype)
    if sample.size == 0:
        return vmin, vmax
    if percentiles is not None:
        lo, hi = _percentiles(sample, float(percentiles[0]), float(percentiles[1]))
        return _exact(lo, dtype), _exact(hi, dtype)
    p_lo, p_hi = (float(v) for v in _percentiles(sample, *ROBUST_PERCENTILES))
    with np.errstate(over="ignore", invalid="ignore"):
        span = (p_hi - p_lo) * ROBUST_MARGIN
        top, bottom = p_hi + span, p_lo - span
    lo = vmin if not bottom > float(vmin) else (math.floor(bottom) if dtype.kind in "iu" else bottom)
    hi = vmax if not top < float(vmax) else (math.ceil(top) if dtype.kind in "iu" else top)
    return lo, hi


@dataclass(frozen=True)
class IntensityMap:
    """``[lo, hi]`` -> [0, 1] for data of ``dtype``; results of :meth:`inverse` are clipped to
    ``[floor, ceil]`` where set (:func:`user_map`: the valid data's range inside user limits)."""

    lo: float
    hi: float
    dtype: np.dtype
    floor: float | None = None
    ceil: float | None = None

    @classmethod
    def fit(cls, data: np.ndarray, lo: float | None = None, hi: float | None = None, *, percentiles=None,
            colour: bool = False, robust: bool = True) -> "IntensityMap":
        """The map for ``data`` (module docstring). ``lo``/``hi`` override the data's limits (e.g.
        napari contrast limits); ``percentiles=(p_lo, p_hi)`` takes those percentiles of the valid
        values instead of the robust range; ``colour``: the last axis is colour (the sample keeps
        it whole); ``robust=False``: the plain range of the valid values."""
        dtype = np.dtype(data.dtype)
        if dtype.kind not in "biuf":
            raise TypeError(f"cannot upscale data of dtype {dtype}; expected integer, float or bool data")
        check_options(None, percentiles)
        if lo is None or hi is None:
            if (dtype == np.uint8 or dtype.kind == "b") and percentiles is None:
                dlo, dhi = 0, 255 if dtype == np.uint8 else 1
            else:
                vals = valid_values(data)
                if not vals.size:
                    dlo, dhi = 0, 1
                elif robust or percentiles is not None:
                    sample = vals if data.size <= SAMPLE_MAX else valid_values(spatial_sample(data, colour))
                    dlo, dhi = choose_limits(dtype, vals.min(), vals.max(), sample, percentiles)
                else:
                    dlo, dhi = vals.min(), vals.max()
            lo = dlo if lo is None else lo
            hi = dhi if hi is None else hi
        return cls.of(dtype, lo, hi)

    @classmethod
    def of(cls, dtype, lo, hi) -> "IntensityMap":
        """The map with limits ``lo``, ``hi`` for data of ``dtype`` (checked finite)."""
        dtype = np.dtype(dtype)
        for name, v in (("lo", lo), ("hi", hi)):
            if not math.isfinite(float(v)):
                raise ValueError(f"intensity limit {name} must be finite, got {v!r}")
        if dtype.kind in "fb" or dtype == np.uint8:
            return cls(float(lo), float(hi), dtype)
        return cls(_exact(lo, dtype), _exact(hi, dtype), dtype)

    @classmethod
    def alpha(cls, dtype) -> "IntensityMap":
        """The map of an alpha channel: the dtype range for integers, [0, 1] for floats and bool."""
        dtype = np.dtype(dtype)
        return cls.of(dtype, 0, np.iinfo(dtype).max if dtype.kind in "iu" else 1)

    def outside(self, a: np.ndarray):
        """Boolean mask of the values of ``a`` that the map cannot hold: masked ones and finite
        ones outside ``[lo, hi]``; None when there are none to look for (uint8 and bool at their
        dtype range)."""
        dtype = np.dtype(a.dtype)
        if dtype.kind == "b" or (dtype == np.uint8 and self.lo <= 0 and self.hi >= 255):
            return None
        with np.errstate(invalid="ignore"):
            out = (a < self.lo) | (a > self.hi)  # NaN compares false: masked() adds it
        bad = masked(a)
        return out if bad is None else out | bad

    def _diff(self) -> float:
        """``hi - lo`` as a float: exact integers first (64-bit ends), inf if it overflows."""
        if isinstance(self.lo, int) and isinstance(self.hi, int):
            return float(self.hi - self.lo)
        return float(self.hi) - float(self.lo)

    @property
    def span(self) -> float:
        return self._diff() if self.hi > self.lo else 1.0

    def _half(self) -> float:
        """1, or 0.5 when ``hi - lo`` overflows float64 (the map then works at half scale)."""
        return 1.0 if math.isfinite(self._diff()) else 0.5

    def forward(self, data: np.ndarray) -> np.ndarray:
        """Data -> float32 in [0, 1] (values outside [lo, hi] are clipped for the model only;
        masked values become 0 or 1 as the module docstring says)."""
        a = np.asarray(data)
        if a.dtype in (np.bool_, np.uint8):
            u = (a.astype(np.float32) - np.float32(self.lo)) / np.float32(self.span)
        elif a.dtype.kind in "iu" and a.dtype.itemsize == 8:
            u = self._offsets(a) / self.span
        else:
            k = self._half()
            span = (float(self.hi) * k - float(self.lo) * k) if self.hi > self.lo else 1.0
            with np.errstate(over="ignore", invalid="ignore"):
                u = (a.astype(np.float64) * k - float(self.lo) * k) / span
            if a.dtype.kind == "f":
                u = np.nan_to_num(u, nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(u, 0.0, 1.0).astype(np.float32, copy=False)

    def _offsets(self, a: np.ndarray) -> np.ndarray:
        """``a - lo`` of 64-bit integers, exact (in uint64), as float64; 0 below ``lo``."""
        lo = self._int_bounds()[0]
        d = a.astype(np.uint64) - np.uint64(lo % 2**64)  # modular: exact wherever a >= lo
        return np.where(a < lo, 0.0, d.astype(np.float64) + (lo - float(self.lo)))

    def _int_bounds(self) -> tuple[int, int]:
        """``[lo, hi]`` as integers inside the dtype's range."""
        info = np.iinfo(self.dtype)
        lo = min(max(math.ceil(self.lo), info.min), info.max)
        hi = max(min(math.floor(self.hi), info.max), info.min)
        return lo, hi

    def inverse(self, u: np.ndarray) -> np.ndarray:
        """Float in [0, 1] -> the original dtype and range (a constant map gives its constant),
        clipped to ``[floor, ceil]`` where set."""
        v = self._inverse(u)
        if self.floor is None or self.dtype.kind == "b":
            return v
        return np.clip(v, self.floor, self.ceil).astype(self.dtype, copy=False)

    def _inverse(self, u: np.ndarray) -> np.ndarray:
        u = np.clip(np.asarray(u, np.float64), 0.0, 1.0)
        if self.dtype.kind == "b":
            return u * (self.span if self.hi > self.lo else 0.0) + self.lo >= 0.5
        if self.dtype.kind in "iu":
            return self._inverse_int(u)
        if not self.hi > self.lo:
            return np.full(u.shape, self.lo, self.dtype)
        k = self._half()
        v = (float(self.lo) * k + u * (float(self.hi) * k - float(self.lo) * k)) / k
        return np.clip(v, self.lo, self.hi).astype(self.dtype)

    def _inverse_int(self, u: np.ndarray) -> np.ndarray:
        lo_b, hi_b = self._int_bounds()
        if lo_b > hi_b:  # a map entirely outside the dtype: its nearest end
            return np.full(u.shape, lo_b if self.lo > np.iinfo(self.dtype).max else hi_b, self.dtype)
        span = self._diff() if self.hi > self.lo else 0.0
        start = float(self.lo - lo_b)  # 0 for integer maps; the fraction below lo for explicit limits
        off = np.rint(u * span + start) if span else np.full(u.shape, start)
        top = float(hi_b - lo_b)
        off = np.clip(off, 0.0, min(top, float(np.nextafter(2.0**64, 0))))
        off = np.minimum(off.astype(np.uint64), np.uint64(hi_b - lo_b))
        if span:
            off[u >= 1.0] = hi_b - lo_b  # the top exactly (float64 cannot hold 64-bit ends)
        res = off + np.uint64(lo_b % 2**64)  # modular: exact, and inside [lo_b, hi_b]
        return (res.view(np.int64) if self.dtype.kind == "i" else res).astype(self.dtype)


MIN_OCCUPANCY = 0.01  # the least part of [0, 1] the data may span under user limits (module docstring)


def _show(v) -> str:
    return str(int(v)) if isinstance(v, (int, np.integer)) else f"{float(v):.6g}"


def user_map(imap: IntensityMap, vmin, vmax, limits=None, percentiles=None) -> IntensityMap:
    """``imap`` (made from user ``limits`` or ``percentiles``) checked against the data it maps,
    whose valid values range from ``vmin`` to ``vmax`` (None: no valid value), with its results
    bounded to the valid data's range inside ``[lo, hi]``.

    The rule: the valid values inside ``[lo, hi]`` must span at least ``MIN_OCCUPANCY`` (1/100) of
    it, i.e. of the model's [0, 1], unless the data is constant; else a ValueError names the data's
    range, the limits and the fix. Below that the model's own error (about 1e-3 of [0, 1]) is
    stretched over the data: at 1/1000 single pixels are off by the whole data range."""
    if vmin is None or vmax is None or not vmax > vmin:
        return imap  # constant (or no valid value): returned as it is, the model never sees it
    vmin, vmax = _exact(vmin, imap.dtype), _exact(vmax, imap.dtype)
    lo, hi = imap.lo, imap.hi
    a, b = max(lo, vmin), min(hi, vmax)
    if not (b > a and hi > lo):
        occupancy = 0.0
    elif all(isinstance(v, int) for v in (a, b, lo, hi)):
        occupancy = (b - a) / (hi - lo)  # exact integers: 64-bit ends keep their small differences
    else:
        occupancy = (float(b) / 2 - float(a) / 2) / (float(hi) / 2 - float(lo) / 2)  # halves: never overflows
    if occupancy < MIN_OCCUPANCY:
        given = "limits"
        if percentiles is not None:
            given = f"percentiles ({_show(percentiles[0])}, {_show(percentiles[1])}) give limits"
        inside = f"span only {occupancy:.3g} of" if b > a else "lie outside"
        data = f"{_show(vmin)} to {_show(vmax)}"
        raise ValueError(f"{given} ({_show(lo)}, {_show(hi)}) on data ranging from {data}: the data would {inside} "
                         f"the model's [0, 1] range (it needs at least 1/{round(1 / MIN_OCCUPANCY)} to survive); "
                         f"give limits close to the data's range (e.g. {_show(vmin)},{_show(vmax)}) "
                         "or none (the robust range)")
    if imap.dtype.kind in "iu":
        a, b = math.ceil(a), math.floor(b)
    return replace(imap, floor=a, ceil=b)


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """For each of ``n_out`` output pixels along an axis, the input pixel its centre falls in."""
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)
    return np.minimum(centres.astype(np.int64), n_in - 1)


def carry(src: np.ndarray, out: np.ndarray, imap: IntensityMap | None = None, rows=None, cols=None) -> np.ndarray:
    """Put the values of ``src`` (H, W[, C]) that ``imap`` cannot hold (masked, and with ``imap``
    out of range: :meth:`IntensityMap.outside`) into ``out`` (rows, cols[, C]) at every output pixel
    whose nearest input pixel holds one; ``out`` is changed in place and returned. ``rows`` and
    ``cols`` are the nearest input row and column of each output pixel (default: the whole-image
    :func:`nearest_index`; a chunk of a bigger image passes its part, offset into ``src``)."""
    bad = masked(src) if imap is None else imap.outside(src)
    if bad is None or not bad.any():
        return out
    rows = nearest_index(src.shape[0], out.shape[0]) if rows is None else rows
    cols = nearest_index(src.shape[1], out.shape[1]) if cols is None else cols
    near = src[rows][:, cols]
    np.copyto(out, near, where=bad[rows][:, cols])
    return out


def carry_masked(src: np.ndarray, out: np.ndarray) -> np.ndarray:
    """:func:`carry` of the masked values only (NaN, inf, nodata)."""
    return carry(src, out)


def constant_value(src: np.ndarray, colour: bool):
    """The value of a plane (or per-channel colour, ``colour``) whose valid values are all equal,
    or None. A plane with no valid value counts as constant (its value: NaN)."""
    planes = [src[..., c] for c in range(src.shape[-1])] if colour else [src]
    vals = []
    for p in planes:
        v = valid_values(p)
        if v.size == 0:
            vals.append(np.nan)
        elif v.min() == v.max():
            vals.append(v.flat[0])
        else:
            return None
    return np.array(vals, src.dtype) if colour else np.array(vals[0], src.dtype)


def to_unit_float(data: np.ndarray) -> np.ndarray:
    """Convenience: ``IntensityMap.fit(data).forward(data)``."""
    return IntensityMap.fit(data).forward(data)
