"""Source planes: the plain description of what a live source shows, with no Qt and no napari.

A :class:`SourceState` is the displayed 2D plane of a layer as napari shows it (the front end
translates a napari layer into one: :func:`napari_liif._qt.layer_state.read_source`): the
full-resolution array, the index (or, when projecting, the slab) of each leading axis, colour,
geometry and intensity options. From it come windows of the plane (lazy arrays through a
:class:`ChunkCache`, each storage chunk read once), the plane codec's intensity maps
(:mod:`napari_liif.codec`, :mod:`napari_liif.intensity`) and, with :meth:`SourceState.prepare`, a
:class:`~napari_liif.live.prepared.Prepared` plane ready for the engine.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..codec import dtype_range_map
from ..codec import intensity_maps as plane_maps
from ..intensity import IntensityMap, check_options, choose_limits, user_map, valid_values
from .prepared import Prepared
from .viewport import LayerGeometry

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

    @classmethod
    def of(cls, limits=None, percentiles=None) -> "Options":
        """Checked options (a one-line ``ValueError`` naming a bad value), as floats."""
        check_options(limits, percentiles)
        return cls(None if limits is None else tuple(float(v) for v in limits),
                   None if percentiles is None else tuple(float(v) for v in percentiles))


@dataclass(frozen=True)
class PlaneKey:
    """The identity of a displayed plane (its data version, slice, projection, colour, shape,
    intensity options): a new key means new latents."""

    data_version: int
    index: tuple
    projection: str
    rgb: bool
    alpha: bool
    shape: tuple
    range_hint: tuple | None
    options: Options


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

    def key(self, data_version: int) -> "PlaneKey":
        """What identifies the plane's encoded fields: equal keys, equal latents."""
        index = tuple((s.start, s.stop) if isinstance(s, slice) else s for s in self.index)
        return PlaneKey(data_version, index, self.projection, self.rgb, self.alpha, self.geometry.shape,
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
        """``{"value": map of the gray values or colours, "alpha": map of RGBA's alpha or None}``,
        by the plane codec's rules (:func:`napari_liif.codec.intensity_maps`): uint8 and bool at
        their dtype range, else the robust range, ``limits`` or ``percentiles``; maps from user
        options are checked against the data (:func:`napari_liif.intensity.user_map`: a one-line
        ValueError where the data would span under 1/100 of them). Reads the plane, or samples
        of a lazy one (whose data range also takes in the layer's contrast range): call it off
        the UI thread."""
        dtype = self._value_dtype()
        alpha = IntensityMap.alpha(self.data.dtype) if self.alpha else None
        opts = self.options
        fixed = dtype_range_map(dtype, opts.percentiles) if opts.limits is None else None
        if fixed is not None:
            return {"value": fixed, "alpha": alpha}
        if not self.lazy:
            plane = self.plane()
            kind = "rgb" if self.rgb else "gray"
            maps = plane_maps(plane[..., :3] if self.rgb else plane, kind, opts.limits, opts.percentiles)
            return {"value": maps["rgb" if self.rgb else None], "alpha": alpha}
        vals = valid_values(self._lazy_sample(read))
        lo, hi = self.range_hint
        if vals.size:
            lo, hi = min(lo, float(vals.min())), max(hi, float(vals.max()))
        vmin, vmax = (lo, hi) if dtype.kind == "f" else (math.floor(lo), math.ceil(hi))
        if opts.limits is not None:
            imap = IntensityMap.of(dtype, *opts.limits)
        else:
            imap = IntensityMap.of(dtype, *choose_limits(dtype, vmin, vmax, vals, opts.percentiles))
        if opts.limits is not None or opts.percentiles is not None:
            imap = user_map(imap, vmin, vmax, opts.limits, opts.percentiles)
        return {"value": imap, "alpha": alpha}

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

    def prepare(self, cache_bytes: int = 256 << 20) -> Prepared:
        """Everything the render thread needs (reads the plane or samples of it)."""
        read = self.reader(cache_bytes)
        return Prepared(self, read, self.intensity_maps(read))


