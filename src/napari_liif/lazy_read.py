"""Image files read chunk by chunk by whichever process computes the chunk.

A :class:`LazyFile` is a small picklable array-like (``shape``, ``dtype``, ``ndim`` and
``__getitem__``) over one image in one file. It carries only the file's absolute path, its
format, which image it is, and the file's size and modification time; no open file, lock or
store. ``dask.array.from_array(LazyFile(...))`` therefore makes a graph that travels to the
workers of a ``dask.distributed`` cluster: each worker process opens the file itself on its first
chunk (TIFF through tifffile's zarr view, reading only the strips or tiles under the chunk; NPY
memory-mapped; PNG and JPEG decoded whole), keeps the handle in a small per-process cache, and
reads its region. The same code reads the chunks of a local run, so both give the same bits.

A file changed after it was opened (other size or modification time) is refused with one line,
never read half old and half new.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

FORMATS = ("TIFF", "NPY", "WHOLE")  # WHOLE: decoded whole by napari_liif.io.read_image (PNG, JPEG)
CACHE_SIZE = 4  # open files kept per process
WHOLE_CACHE_SIZE = 2  # of which decoded PNG/JPEG images (they hold all their pixels)

_CACHE: OrderedDict[tuple, _Handle] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_OPENING: dict[tuple, threading.Lock] = {}  # files being opened, one lock each
OPENED = {"count": 0}  # files opened by this process (tests count work with it)


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


class _Handle:
    """One open image of one file; ``read(sel)`` under its own lock (file handles seek).
    ``read`` gives None once the handle was closed (evicted from the cache meanwhile)."""

    def __init__(self, path: Path, fmt: str, key: int):
        self.lock = threading.Lock()
        self.fmt = fmt
        self._closer = None
        if fmt == "TIFF":
            import tifffile
            import zarr

            store = tifffile.imread(path, aszarr=True, series=key, level=0)
            self._closer = store.close
            self.array = zarr.open(store, mode="r")
        elif fmt == "NPY":
            self.array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            from .io import read_image

            self.array = read_image(path)

    def read(self, sel) -> np.ndarray | None:
        with self.lock:
            return None if self.array is None else np.array(self.array[sel])

    def close(self) -> None:
        with self.lock:
            self.array = None
            if self._closer is not None:
                self._closer()


def _handle(path: Path, fmt: str, key: int, stamp: tuple[int, int]) -> _Handle:
    ident = (str(path), fmt, key, stamp)
    with _CACHE_LOCK:
        h = _CACHE.get(ident)
        if h is not None:
            _CACHE.move_to_end(ident)
            return h
        opening = _OPENING.setdefault(ident, threading.Lock())
    with opening:  # one thread opens (decodes) a file; the others of its process wait for that handle
        with _CACHE_LOCK:
            h = _CACHE.get(ident)
        if h is not None:
            return h
        h = _Handle(path, fmt, key)  # outside the cache lock: decoding a large PNG stalls no other file
        with _CACHE_LOCK:
            OPENED["count"] += 1
            _CACHE[ident] = h
            _OPENING.pop(ident, None)
            evict = []
            while len(_CACHE) > CACHE_SIZE or sum(v.fmt == "WHOLE" for v in _CACHE.values()) > WHOLE_CACHE_SIZE:
                old = next(k for k, v in _CACHE.items() if len(_CACHE) > CACHE_SIZE or v.fmt == "WHOLE")
                evict.append(_CACHE.pop(old))
    for old in evict:
        old.close()
    return h


class LazyFile:
    """A picklable, lazily read array-like over image ``key`` (a TIFF series) of a file.

    Parameters
    ----------
    path : str or Path
        The file; kept as an absolute path, so workers started in any folder find it (on a
        cluster, every worker must see the file under that path: a shared file system).
    fmt : {"TIFF", "NPY", "WHOLE"}
        How chunks are read: the TIFF's zarr view (level 0 of series ``key``), a memory map,
        or the whole file decoded once per process by :func:`napari_liif.io.read_image`.
    key : int
        The TIFF series.

    Opening it here (in the calling process) gives ``shape`` and ``dtype``; every process that
    reads a chunk opens the file once and caches the handle.
    """

    def __init__(self, path, fmt: str, key: int = 0):
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.path = Path(os.path.abspath(path))
        self.fmt, self.key = fmt, int(key)
        self.stamp = _stamp(self.path)
        a = _handle(self.path, fmt, self.key, self.stamp).array
        self.shape = tuple(int(n) for n in a.shape)
        self.dtype = np.dtype(a.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, sel) -> np.ndarray:
        from .io import ImageIOError

        try:
            now = _stamp(self.path)
        except OSError as exc:
            raise ImageIOError(f"{self.path}: cannot open ({exc.strerror or type(exc).__name__}) "
                               "while reading it chunk by chunk") from None
        if now != self.stamp:
            raise ImageIOError(f"{self.path}: the file changed while it was being read; run again "
                               "once nothing writes to it")
        try:
            while True:
                out = _handle(self.path, self.fmt, self.key, self.stamp).read(sel)
                if out is not None:  # None: evicted and closed by another thread just now
                    return out
        except (ImageIOError, MemoryError):
            raise
        except Exception:  # noqa: BLE001 - a reader's failure on a bad chunk becomes one line of ours
            what = {"WHOLE": "image"}.get(self.fmt, self.fmt)
            raise ImageIOError(f"{self.path}: corrupt or truncated {what} file") from None

    def __dask_tokenize__(self):
        return ("napari_liif.LazyFile", str(self.path), self.fmt, self.key, self.stamp)

    def __repr__(self) -> str:
        return f"LazyFile({str(self.path)!r}, {self.fmt!r}, key={self.key}, shape={self.shape}, dtype={self.dtype})"


def lazy_array(path, fmt: str, chunks, key: int = 0):
    """``path`` as a dask array of ``chunks`` (a :class:`LazyFile` under it)."""
    import dask.array as da

    f = LazyFile(path, fmt, key)
    meta = np.empty((0,) * f.ndim, f.dtype)
    return da.from_array(f, chunks=chunks(f.shape) if callable(chunks) else chunks, lock=False,
                         fancy=False, meta=meta)
