"""What live zoom needs to know about a napari layer and the viewer: the displayed 2D plane (a
thick slice projected as napari projects it), its intensity mapping, its world geometry, or a
message saying why it cannot be shown.

* **The plane as napari shows it.** The slice index is napari's (the dims point mapped into the
  layer's data, rounded half to even); a point outside the layer's extent shows nothing, as in
  napari. With a ``projection_mode`` other than ``none``, the thick slice's planes (napari's
  margins, the same rounding) are reduced with the same function (min, max, mean, sum).
* **Lazy data** (dask, zarr, the full-resolution level of a multiscale layer) is read through a
  :class:`ChunkCache`: whole storage chunks, each read once and kept (bounded), so the
  overlapping windows of the encoder and the fallback never read a chunk twice.
* **One intensity mapping** (:mod:`napari_liif.intensity`): in-memory planes by their robust
  range (or the ``limits``/``percentiles`` asked for); lazy ones by the same rule applied to the
  coarsest level of a multiscale layer at least 64 pixels on a side, or to a regular sample of
  the plane's chunks together with napari's contrast-limit range, so nothing reads a whole plane.
* **RGBA** goes through the model premultiplied: colour times alpha, and alpha, two fields;
  :meth:`Prepared.combine` divides again. The overlay's alpha is the normalised alpha, as napari
  draws it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..intensity import IntensityMap, choose_limits, valid_values
from ..viewport import Camera2D, LayerGeometry

PROJECTIONS = {"min": np.min, "max": np.max, "mean": np.mean, "sum": np.sum}
CHUNK_DEFAULT = 256  # storage chunk side assumed for lazy arrays that do not say theirs
SAMPLE_CHUNKS = 16  # chunks of a lazy plane sampled for its intensity range


class ChunkCache:
    """Windows of one plane of a lazy array, assembled from whole storage chunks read at most once
    (LRU, ``max_bytes``). ``read_chunk(rows, cols)`` reads one chunk (slices of the plane)."""

    def __init__(self, read_chunk: Callable, shape: tuple[int, int], chunks: tuple[int, int],
                 max_bytes: int = 256 << 20):
        self._read, self.shape, self.chunks = read_chunk, tuple(shape), tuple(max(1, int(c)) for c in chunks)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._bytes, self._max = 0, int(max_bytes)
        self._lock = threading.Lock()
        self.reads = 0  # chunks read from the array so far

    def chunk(self, i: int, j: int) -> np.ndarray:
        with self._lock:
            hit = self._cache.get((i, j))
            if hit is not None:
                self._cache.move_to_end((i, j))
                return hit
        (ch, cw), (h, w) = self.chunks, self.shape
        block = np.asarray(self._read(slice(i * ch, min(h, (i + 1) * ch)), slice(j * cw, min(w, (j + 1) * cw))))
        with self._lock:
            self.reads += 1
            self._cache[(i, j)] = block
            self._bytes += block.nbytes
            while len(self._cache) > 1 and self._bytes > self._max:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.nbytes
        return block

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        ch, cw = self.chunks
        rows = []
        for i in range(y0 // ch, (y1 - 1) // ch + 1):
            row = [self.chunk(i, j) for j in range(x0 // cw, (x1 - 1) // cw + 1)]
            rows.append(np.concatenate(row, axis=1) if len(row) > 1 else row[0])
        block = np.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]
        oy, ox = (y0 // ch) * ch, (x0 // cw) * cw
        return block[y0 - oy:y1 - oy, x0 - ox:x1 - ox]


def _storage_chunks(data, spatial: tuple[int, int]) -> tuple[int, int]:
    """The array's chunk size along its two spatial axes (dask or zarr), or a default."""
    ch = getattr(data, "chunks", None)
    try:
        if ch and isinstance(ch[0], tuple):  # dask: per-axis tuples of chunk lengths
            return int(max(ch[spatial[0]])), int(max(ch[spatial[1]]))
        if ch:  # zarr: one size per axis
            return int(ch[spatial[0]]), int(ch[spatial[1]])
    except (IndexError, TypeError, ValueError):
        pass
    return CHUNK_DEFAULT, CHUNK_DEFAULT


@dataclass(frozen=True)
class Options:
    """The user's intensity options: ``limits=(lo, hi)`` or ``percentiles=(p_lo, p_hi)``."""

    limits: tuple | None = None
    percentiles: tuple | None = None


@dataclass(frozen=True)
class SourceState:
    """The displayed plane of the source layer.

    ``data`` is the full-resolution array (level 0 of a multiscale layer), ``index`` the index (an
    int) or, when projecting, the slab (a slice) of each non-displayed leading axis, ``rgb``
    whether the last axis is colour (``alpha``: RGBA), ``projection`` napari's projection mode,
    ``range_hint`` the contrast-limit range (used for lazy arrays only), ``coarse`` the plane of a
    coarse multiscale level (for the intensity range of lazy data), ``interpolation`` the
    layer's 2D interpolation (the fallback shown before LIIF tiles arrive follows it).
    """

    data: object
    index: tuple
    rgb: bool
    geometry: LayerGeometry
    range_hint: tuple[float, float]
    projection: str = "none"
    alpha: bool = False
    options: Options = field(default_factory=Options)
    coarse: object = None
    interpolation: str = "nearest"

    @property
    def lazy(self) -> bool:
        return not isinstance(self.data, np.ndarray)

    def field_key(self, data_version: int) -> tuple:
        index = tuple((s.start, s.stop) if isinstance(s, slice) else s for s in self.index)
        return (data_version, index, self.projection, self.rgb, self.alpha, self.geometry.shape,
                self.range_hint if self.lazy else None, self.options)

    def plane(self):
        """The whole displayed plane, in data units (reads it all: in-memory data only)."""
        return self._project(np.asarray(self.data[self.index]))

    def _project(self, block: np.ndarray) -> np.ndarray:
        if self.projection == "none":
            return block
        lead = tuple(range(len(self.index)))
        return PROJECTIONS[self.projection](block, axis=lead)

    def reader(self, cache_bytes: int = 256 << 20):
        """``read(y0, y1, x0, x1)``: a window of the plane in data units (projection applied), lazy
        arrays through a :class:`ChunkCache` (returned as ``read.cache``; None in memory)."""
        data, index, rgb = self.data, self.index, self.rgb
        colour = (slice(None),) if rgb else ()

        def read_direct(rows: slice, cols: slice) -> np.ndarray:
            return self._project(np.asarray(data[index + (rows, cols) + colour]))

        if not self.lazy:
            def read(y0, y1, x0, x1):
                return read_direct(slice(y0, y1), slice(x0, x1))

            read.cache = None
            return read
        nd = len(index)
        cache = ChunkCache(read_direct, self.geometry.shape, _storage_chunks(data, (nd, nd + 1)), cache_bytes)

        def read(y0, y1, x0, x1):
            return cache.window(y0, y1, x0, x1)

        read.cache = cache
        return read

    def intensity_maps(self, read=None) -> dict:
        """``{"value": map of the gray values or colours, "alpha": map of RGBA's alpha or None}``
        (module docstring). Reads the plane, or samples of it: call it off the UI thread."""
        dtype = self._value_dtype()
        alpha = IntensityMap.alpha(self.data.dtype) if self.alpha else None
        opts = self.options
        if opts.limits is not None:
            return {"value": IntensityMap.of(dtype, *opts.limits), "alpha": alpha}
        if (dtype == np.uint8 or dtype.kind == "b") and opts.percentiles is None:
            return {"value": IntensityMap.fit(np.empty(0, dtype)), "alpha": alpha}
        if not self.lazy:
            plane = self.plane()
            return {"value": IntensityMap.fit(plane[..., :3] if self.rgb else plane, percentiles=opts.percentiles,
                                              colour=self.rgb), "alpha": alpha}
        sample = self._lazy_sample(read)
        vals = valid_values(sample)
        lo, hi = self.range_hint
        if vals.size:
            lo, hi = min(lo, float(vals.min())), max(hi, float(vals.max()))
        vmin, vmax = (lo, hi) if dtype.kind == "f" else (math.floor(lo), math.ceil(hi))
        return {"value": IntensityMap.of(dtype, *choose_limits(dtype, vmin, vmax, vals, opts.percentiles)),
                "alpha": alpha}

    def _value_dtype(self) -> np.dtype:
        dtype = np.dtype(self.data.dtype)
        if self.projection in ("mean", "sum"):
            return self._project(np.zeros((1,) * len(self.index) + (1, 1), dtype)).dtype
        return dtype

    def _lazy_sample(self, read) -> np.ndarray:
        """Values of a lazy plane for its range: a coarse level's whole plane, else
        ``SAMPLE_CHUNKS`` storage chunks spread over the plane (read through the cache)."""
        if self.coarse is not None:
            block = np.asarray(self.coarse)
            return block[..., :3] if self.rgb else block
        read = read or self.reader()
        cache = read.cache
        (h, w), (ch, cw) = self.geometry.shape, cache.chunks
        ni, nj = -(-h // ch), -(-w // cw)
        k = max(1, round(math.sqrt(ni * nj / SAMPLE_CHUNKS)))
        blocks = [cache.chunk(i, j) for i in range(k // 2, ni, k) for j in range(k // 2, nj, k)]
        blocks = blocks or [cache.chunk(0, 0)]
        flat = np.concatenate([b[..., :3].reshape(-1) if self.rgb else b.reshape(-1) for b in blocks])
        return flat

    def prepare(self, cache_bytes: int = 256 << 20) -> "Prepared":
        """Everything the render thread needs (reads the plane or samples of it)."""
        read = self.reader(cache_bytes)
        return Prepared(self, read, self.intensity_maps(read))


def _nearest_index(lo: float, hi: float, n: int, size: int) -> np.ndarray:
    """Data pixel under the centre of each of ``n`` samples spanning edges ``[lo, hi]``."""
    centres = lo + (np.arange(n) + 0.5) * ((hi - lo) / n)
    return np.clip(np.floor(centres).astype(np.int64), 0, size - 1)


class Prepared:
    """A plane ready for the engine: its fields (one, or colour and alpha for RGBA), and the maps
    from renders and from raw samples back to what the overlay shows.

    ``fields``: ``[(name, source)]`` with ``source(y0, y1, x0, x1)`` a window in [0, 1] (gray
    (h, w), colour (h, w, 3)). ``combine(renders, near)`` gives the overlay's values from one render
    (rows, cols, 3) per field; values ``near`` (the raw data under each sample,
    :meth:`nearest`) that the map cannot hold (NaN, nodata, outliers beyond its range) are shown
    as they are. ``fallback(region, shape)`` is what napari itself would show at those samples
    (the layer's ``nearest`` or, for every smoother interpolation, ``linear``).
    """

    def __init__(self, state: SourceState, read, maps: dict):
        self.state, self.read, self.maps = state, read, maps
        self.shape = state.geometry.shape
        vmap, amap = maps["value"], maps["alpha"]
        span, lo = np.float32(vmap.span), np.float32(vmap.lo)
        self._span, self._lo = span, lo
        rgb, alpha = state.rgb, state.alpha

        def value_source(y0, y1, x0, x1):
            w = read(y0, y1, x0, x1)
            u = vmap.forward(w[..., :3] if rgb else w)
            if alpha:
                u = u * amap.forward(w[..., 3])[..., None]
            return u

        #: whether a sample can hold a value the map cannot (masked, or beyond its range): only then
        #: is the raw data under each sample read to carry it (:meth:`combine`)
        dtype = vmap.dtype
        self.carries = not (dtype.kind == "b" or (dtype == np.uint8 and vmap.lo <= 0 and vmap.hi >= 255))
        self.fields = [("value", value_source)]
        if alpha:
            self.fields.append(("alpha", lambda y0, y1, x0, x1: amap.forward(read(y0, y1, x0, x1)[..., 3])))

    @property
    def cache(self):
        return getattr(self.read, "cache", None)

    def field_source(self, name: str):
        return dict(self.fields)[name]

    # -- renders -> overlay values ----------------------------------------------------------------
    def combine(self, renders: list[np.ndarray], near: np.ndarray | None = None) -> np.ndarray:
        st = self.state
        if not st.rgb:
            out = renders[0].mean(-1) * self._span + self._lo
        else:
            colour = renders[0]
            out = np.empty(colour.shape[:2] + (4,), np.float32)
            if st.alpha:
                a = np.clip(renders[1].mean(-1), 0.0, 1.0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    colour = np.where(a[..., None] > 0, colour / a[..., None], 0.0)
                out[..., 3] = a
            else:
                out[..., 3] = 1.0
            out[..., :3] = np.clip(colour, 0.0, 1.0) * self._span + self._lo
        out = out.astype(np.float32, copy=False)
        if near is not None:
            self._carry(out, near)
        return out

    def _carry(self, out: np.ndarray, near: np.ndarray) -> None:
        vals = near[..., :3] if self.state.rgb else near
        bad = self.maps["value"].outside(vals)
        if bad is not None and bad.any():
            if self.state.rgb:
                np.copyto(out[..., :3], vals.astype(np.float32), where=bad)
            else:
                np.copyto(out, vals.astype(np.float32), where=bad)

    # -- raw samples --------------------------------------------------------------------------------
    def nearest(self, region, shape) -> np.ndarray:
        """The raw data (data units) of the pixel under each sample of a tile."""
        (h, w), (rows, cols) = self.shape, shape
        ri = _nearest_index(region[0], region[2], rows, h)
        ci = _nearest_index(region[1], region[3], cols, w)
        block = self.read(int(ri.min()), int(ri.max()) + 1, int(ci.min()), int(ci.max()) + 1)
        return block[ri - ri.min()][:, ci - ci.min()]

    def fallback(self, region, shape) -> np.ndarray:
        """napari's own look of a tile's samples, in the overlay's layout (nearest or bilinear)."""
        st = self.state
        raw = self._bilinear(region, shape) if st.interpolation != "nearest" else self.nearest(region, shape)
        raw = raw.astype(np.float32, copy=False)
        if not st.rgb:
            return raw
        out = np.empty(raw.shape[:2] + (4,), np.float32)
        out[..., :3] = raw[..., :3]
        out[..., 3] = self.maps["alpha"].forward(raw[..., 3]) if st.alpha else 1.0
        return out

    def _bilinear(self, region, shape) -> np.ndarray:
        """Border-clamped bilinear samples at the tile's sample centres (GL linear filtering)."""
        (h, w), (rows, cols) = self.shape, shape
        taps = []
        for lo, hi, n, size in ((region[0], region[2], rows, h), (region[1], region[3], cols, w)):
            p = np.clip(lo + (np.arange(n) + 0.5) * ((hi - lo) / n) - 0.5, 0, size - 1)
            i0 = np.floor(p).astype(np.int64)
            taps.append((i0, np.minimum(i0 + 1, size - 1), (p - i0).astype(np.float32)))
        (y0, y1, ty), (x0, x1, tx) = taps
        a, b = int(y0.min()), int(y1.max()) + 1
        c, d = int(x0.min()), int(x1.max()) + 1
        block = self.read(a, b, c, d).astype(np.float32)
        if self.state.rgb:
            ty, tx = ty[:, None, None], tx[None, :, None]
        else:
            ty, tx = ty[:, None], tx[None, :]
        top = block[y0 - a][:, x0 - c] * (1 - tx) + block[y0 - a][:, x1 - c] * tx
        bot = block[y1 - a][:, x0 - c] * (1 - tx) + block[y1 - a][:, x1 - c] * tx
        return top * (1 - ty) + bot * ty

    # -- the interface the render thread has used so far ----------------------------------------
    def __iter__(self):
        """``(source, shape, to_data)`` of the first field: ``source`` a window in [0, 1],
        ``to_data`` a render (rows, cols, 3) to the overlay's values."""
        to_data = (lambda u: self.combine([u])[..., :3]) if self.state.rgb else (lambda u: self.combine([u]))
        return iter((self.fields[0][1], self.shape, to_data))


def _is_identity(layer) -> bool:
    """True when the layer's transform is scale + translate only (no rotation, shear or affine)."""
    n = layer.ndim
    checks = [np.asarray(layer.rotate, float), np.asarray(layer.affine.affine_matrix, float)[:n, :n],
              np.asarray(layer.affine.affine_matrix, float)[:n, n]]
    return (np.allclose(checks[0], np.eye(n)) and np.allclose(np.asarray(layer.shear, float), 0)
            and np.allclose(checks[1], np.eye(n)) and np.allclose(checks[2], 0))


def range_hint(layer) -> tuple[float, float]:
    """The widest of the layer's contrast limits and their range (used for lazy arrays only)."""
    lims = [float(v) for v in (*layer.contrast_limits_range, *layer.contrast_limits)]
    return min(lims), max(lims)


def is_overlay(layer) -> bool:
    """True for a ``[LIIF]`` overlay layer made by live zoom."""
    return "napari_liif_overlay_of" in (getattr(layer, "metadata", None) or {})


def check_layer(layer) -> str | None:
    """Why live zoom cannot run on ``layer`` at all (None if it can)."""
    from napari.layers import Image, Labels

    if isinstance(layer, Labels):
        return (f"layer {layer.name!r} is a Labels layer: its values are categories, and interpolating "
                "them would invent labels; LIIF zoom works on image layers")
    if not isinstance(layer, Image):
        return f"LIIF zoom works on image layers; {layer.name!r} is a {type(layer).__name__} layer"
    if is_overlay(layer):
        return f"layer {layer.name!r} is a live-zoom overlay; choose the image layer it shows"
    data = layer.data[0] if layer.multiscale else layer.data
    if np.dtype(data.dtype).kind not in "biuf":
        return f"layer {layer.name!r} has data of dtype {data.dtype}; LIIF zoom needs integer, float or bool data"
    return None


def _slab(point: float, left: float, right: float, size: int):
    """napari's thick slice along one axis: a slice, or None when it misses the layer."""
    low_r, high_r = np.round(point - left), np.round(point + right)
    if high_r < 0 or low_r > size - 1:
        return None
    low, high = max(int(low_r), 0), max(int(high_r), 0)
    if np.isclose(high, point + right):
        high += 1
    if low == high:
        high += 1
    return slice(low, min(high, size))


def _coarse_plane(layer, index: tuple, rgb: bool):
    """The plane of the coarsest multiscale level at least 64 pixels on a side (None otherwise)."""
    if not layer.multiscale or len(layer.data) < 2:
        return None
    base = layer.data[0].shape
    n = len(index)
    for level in reversed(layer.data[1:]):
        if min(level.shape[n:n + 2]) >= 64:
            idx = []
            for k, ix in enumerate(index):
                r = level.shape[k] / base[k]
                if isinstance(ix, slice):
                    idx.append(slice(int(ix.start * r), max(int(ix.start * r) + 1, int(math.ceil(ix.stop * r)))))
                else:
                    idx.append(min(int(ix * r), level.shape[k] - 1))
            return level[tuple(idx)]
    return None


def read_source(viewer, layer, options: Options | None = None) -> SourceState | str:
    """The source's displayed plane now, or a one-line reason it cannot be shown live."""
    reason = check_layer(layer)
    if reason:
        return reason
    if viewer.dims.ndisplay != 2:
        return "LIIF zoom works in the 2D view; switch the viewer to 2D to see it"
    if viewer.canvas.grid.enabled:
        return "LIIF zoom does not work in grid mode; turn grid mode off to see it"
    ndim = viewer.dims.ndim
    if list(viewer.dims.displayed) != [ndim - 2, ndim - 1]:
        return ("LIIF zoom needs the last two axes displayed as rows and columns; "
                f"the viewer displays axes {list(viewer.dims.displayed)} of {ndim}")
    if not _is_identity(layer):
        return (f"layer {layer.name!r} is rotated, sheared or has an affine transform; "
                "LIIF zoom supports scale and translate only")
    mode = str(getattr(layer, "projection_mode", "none"))
    if mode != "none" and mode not in PROJECTIONS:
        return f"layer {layer.name!r} uses projection {mode!r}; LIIF zoom shows none, min, max, mean and sum"
    data = layer.data[0] if layer.multiscale else layer.data
    n = layer.ndim
    scale = np.asarray(layer.scale, float)
    translate = np.asarray(layer.translate, float)
    if np.any(scale[-2:] <= 0):
        return f"layer {layer.name!r} has a non-positive scale {tuple(scale[-2:])}; LIIF zoom needs positive scales"
    point = np.asarray(viewer.dims.point, float)[-n:]
    left = np.asarray(viewer.dims.margin_left, float)[-n:] if len(viewer.dims.margin_left) >= n else np.zeros(n)
    right = np.asarray(viewer.dims.margin_right, float)[-n:] if len(viewer.dims.margin_right) >= n else np.zeros(n)
    shape = data.shape[:n]
    index = []
    for a in range(n - 2):
        p = (point[a] - translate[a]) / scale[a]
        if mode == "none":
            k = int(np.round(p))
            if not 0 <= k < shape[a]:
                return f"idle: this slice is outside layer {layer.name!r} (napari shows nothing there)"
            index.append(k)
        else:
            s = _slab(p, left[a] / abs(scale[a]), right[a] / abs(scale[a]), shape[a])
            if s is None:
                return f"idle: this slice is outside layer {layer.name!r} (napari shows nothing there)"
            index.append(s)
    if all(isinstance(i, slice) and i.stop - i.start == 1 for i in index):
        index = [i.start for i in index]  # a slab one plane thick is that plane, as napari shows it
    index = tuple(index)
    geom = LayerGeometry((int(shape[-2]), int(shape[-1])), (float(scale[-2]), float(scale[-1])),
                         (float(translate[-2]), float(translate[-1])))
    rgb = bool(layer.rgb)
    lazy = not isinstance(data, np.ndarray)
    return SourceState(data, index, rgb, geom, range_hint(layer), mode if any(isinstance(i, slice) for i in index)
                       else "none", alpha=rgb and data.shape[-1] == 4, options=options or Options(),
                       coarse=_coarse_plane(layer, index, rgb) if lazy else None,
                       interpolation=str(getattr(layer, "interpolation2d", "nearest")))


def read_camera(viewer, dpr: float = 1.0) -> Camera2D:
    """napari's 2D camera, in physical pixels when ``dpr`` (the device pixel ratio) is not 1."""
    cam = viewer.scene.camera
    h, w = viewer.canvas.size
    return Camera2D(tuple(float(c) for c in cam.center[-2:]), float(cam.zoom), (int(h), int(w))).physical(dpr)
