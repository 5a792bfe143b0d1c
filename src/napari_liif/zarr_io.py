"""Zarr and OME-Zarr in and out, and files opened lazily as dask arrays.

* :func:`read_zarr` opens a zarr array, an OME-Zarr image (its full-resolution level) or a group
  holding one array; :func:`read_ome_metadata` gives its axes, scale and translation.
* :func:`write_zarr` writes chunk by chunk into a hidden temporary store beside the destination and
  swaps it in once every chunk is written (:mod:`napari_liif.outputs`): a store under its final
  name is always complete, and carries ``napari_liif.complete = true``. OME-Zarr images can carry
  a multiscale pyramid (``levels``): level ``k`` is the 2 x 2 mean of level ``k - 1`` along y and
  x, read back from the store (the full-resolution level is computed once), with the coordinate
  transformations that put every level's pixel centres where they belong:
  ``scale * 2**k`` and ``translation + scale * (2**k - 1) / 2`` on y and x. It never replaces a folder
  that holds anything other than a zarr store, nor a store that was not written by napari-liif
  unless ``overwrite``.
* :func:`open_lazy` reads TIFF (through tifffile's zarr view), NPY (memory-mapped) and zarr
  without loading them; other formats are read whole. Its graphs hold file paths (absolute),
  never open files, so they run on a ``dask.distributed`` cluster (:mod:`napari_liif.lazy_read`).
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

import numpy as np

from .ome import multiscales
from .outputs import ZARR_KEY, Claim, Inputs, OutputError, atomic_store, check_store, store_state
from .owners import signals_held

DEFAULT_CHUNK = 512
SLASH_KEYS = {"name": "v2", "separator": "/"}  # chunk keys as NGFF wants them: 0/0/0, not 0.0.0


def is_zarr(path) -> bool:
    """True for a zarr store directory (v2 or v3, array or group)."""
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in (".zarray", ".zgroup", "zarr.json"))


def _multiscales(attrs) -> list:
    attrs = dict(attrs)
    return attrs.get("multiscales") or dict(attrs.get("ome") or {}).get("multiscales") or []


def _open(path):
    import zarr

    try:  # absolute: the array travels to workers that may run in another folder
        return zarr.open(os.path.abspath(path), mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        from .io import ImageIOError

        raise ImageIOError(f"{path}: not a readable zarr store (bad or missing metadata)") from None


def read_levels(path) -> list:
    """Every level of an OME-Zarr image, full resolution first, as dask arrays."""
    import dask.array as da

    node = _open(path)
    return [da.from_zarr(node[d["path"]]) for d in _multiscales(node.attrs)[0]["datasets"]]


def read_zarr(path, component: str | None = None):
    """Open a zarr array, an OME-Zarr image (its full-resolution level) or a group holding a
    single array, as a dask array."""
    import dask.array as da
    import zarr

    node = _open(path)
    if isinstance(node, zarr.Array):
        return da.from_zarr(node)
    if component is not None:
        return da.from_zarr(node[component])
    ms = _multiscales(node.attrs)
    if ms:
        return da.from_zarr(node[ms[0]["datasets"][0]["path"]])
    keys = sorted(node.array_keys())
    if len(keys) != 1:
        hint = f"give one of them as the input (e.g. {Path(path) / keys[0]})" if keys else "it holds no array"
        raise ValueError(f"{path}: a zarr group with arrays {keys or 'none'}; {hint}, or pass component=")
    return da.from_zarr(node[keys[0]])


def read_ome_metadata(path) -> dict | None:
    """``{'axes': [...], 'scale': [...], 'translation': [...], 'units': [...], 'levels': [...]}`` of an
    OME-Zarr: the first level's transformations, the axes' units (None where unset) and the
    paths of all levels."""
    import zarr

    node = _open(path)
    ms = _multiscales(node.attrs) if not isinstance(node, zarr.Array) else []
    if not ms:
        return None
    axes = [a["name"] if isinstance(a, dict) else str(a) for a in ms[0].get("axes", [])]
    units = [a.get("unit") if isinstance(a, dict) else None for a in ms[0].get("axes", [])]
    meta = {"axes": axes, "scale": None, "translation": None, "units": units,
            "levels": [d["path"] for d in ms[0]["datasets"]]}
    for t in ms[0]["datasets"][0].get("coordinateTransformations", []):
        if t.get("type") in ("scale", "translation"):
            meta[t["type"]] = [float(v) for v in t[t["type"]]]
    return meta


def guess_axes(ndim: int, *, channel_axis: int | None = None, rgb: bool = False,
               any_order: bool = False) -> list[str] | None:
    """OME-NGFF axis names for a layout, or None where it does not fit OME (trailing RGB; with
    ``any_order`` False also a channel axis after z, which NGFF order cannot hold untransposed)."""
    if rgb:
        return None
    n_sp = ndim - (channel_axis is not None)
    names = {2: ["y", "x"], 3: ["z", "y", "x"], 4: ["t", "z", "y", "x"]}.get(n_sp)
    if names is None:
        return None
    if channel_axis is not None:
        names.insert(channel_axis % ndim, "c")
    order = [n for n in "tczyx" if n in names]
    return names if names == order or any_order else None


def upscaled_transform(scale, translate, in_hw, out_hw):
    """Scale and translate of the upscaled spatial axes so they overlay the input exactly.

    Output pixel ``j`` covers input edges ``[j r, (j + 1) r]`` with ``r = n_in / n_out``;
    its centre is at input data coordinate ``(j + 0.5) r - 0.5``; so the new scale is
    ``scale * r`` and the new translate ``translate + scale * (0.5 r - 0.5)``.
    """
    r = [i / o for i, o in zip(in_hw, out_hw)]
    return ([s * k for s, k in zip(scale, r)],
            [t + s * (0.5 * k - 0.5) for t, s, k in zip(translate, scale, r)])


def level_transforms(scale, translation, axes, k: int) -> list[dict]:
    """The OME coordinate transformations of pyramid level ``k`` (module docstring)."""
    sc = [float(v) for v in scale]
    tr = [float(v) for v in (translation if translation is not None else [0.0] * len(sc))]
    f = 2 ** k
    for i, name in enumerate(axes):
        if name in ("y", "x"):
            tr[i] += sc[i] * (f - 1) / 2
            sc[i] *= f
    out = [{"type": "scale", "scale": sc}]
    if translation is not None or k:
        out.append({"type": "translation", "translation": tr})
    return out


def pyramid_levels(shape, axes, chunks, smallest: int = 256) -> int:
    """How many levels a pyramid of ``shape`` gets: halving y and x until neither exceeds
    ``smallest`` (or one is a single pixel), at most 8."""
    sp = [shape[axes.index(n)] for n in ("y", "x")]
    n = 1
    while max(sp) > smallest and min(sp) >= 2 and n < 8:
        sp = [v // 2 for v in sp]
        n += 1
    return n


def _create(tmp: Path, a, chunks, axes, scale, translation, name, units=None, levels: int = 1):
    """Create the (empty) store at ``tmp``; return (target array, node carrying our marker, root)."""
    import zarr

    tmp = os.path.abspath(tmp)  # absolute: workers in another folder write their chunks here too
    if axes is None:
        target = zarr.create_array(tmp, shape=a.shape, chunks=chunks, dtype=a.dtype, zarr_format=2,
                                   chunk_key_encoding=SLASH_KEYS, overwrite=False)
        return target, target, None
    root = zarr.open_group(tmp, mode="w-", zarr_format=2)
    target = root.create_array("0", shape=a.shape, chunks=chunks, dtype=a.dtype, chunk_key_encoding=SLASH_KEYS)
    scale = scale or [1.0] * a.ndim
    levels_tr = []
    for k in range(levels):
        tr = level_transforms(scale, translation if translation is not None else [0.0] * a.ndim, axes, k)
        levels_tr.append((str(k), tr[0]["scale"], tr[1]["translation"]))
    root.attrs["multiscales"] = multiscales(axes, scale, levels_tr[0][2], levels_tr, name, units)
    return target, root, root


def _downsample(a, axes):
    """The 2 x 2 mean along y and x (odd edges dropped), in the array's dtype."""
    import dask.array as da

    factors = {i: (2 if n in ("y", "x") else 1) for i, n in enumerate(axes)}
    dtype = a.dtype
    f = a.astype(np.float64) if dtype.kind != "f" else a
    m = da.coarsen(np.mean, f, factors, trim_excess=True)
    if dtype.kind == "b":
        return m >= 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return da.clip(da.round(m), info.min, info.max).astype(dtype)
    return m.astype(dtype)


def _write_levels(root, axes, chunks, levels: int, writes: _Writes) -> None:
    """Levels 1.. of the pyramid, each from the one before it as stored."""
    import dask.array as da

    prev = da.from_zarr(root["0"])
    for k in range(1, levels):
        lv = _downsample(prev, axes)
        ch = tuple(min(c, n) for c, n in zip(chunks, lv.shape))
        target = root.create_array(str(k), shape=lv.shape, chunks=ch, dtype=lv.dtype, chunk_key_encoding=SLASH_KEYS)
        da.store(lv.rechunk(ch), writes.into(target), lock=False)
        prev = da.from_zarr(target)


_WRITES: dict[str, _Writes] = {}  # this process's stores being written, by token


class _Writes:
    """The chunk writes into one temporary store, which end for good when the store is given
    up: :meth:`stop` waits for the writes in flight and refuses later ones, so that nothing
    recreates the store's folder after it is removed (dask's threads outlive an interrupt)."""

    def __init__(self):
        self.token = secrets.token_hex(8)
        self.cond = threading.Condition()
        self.busy, self.stopped = 0, False
        _WRITES[self.token] = self

    def into(self, target) -> _Guarded:
        return _Guarded(target, self.token)

    def stop(self, timeout: float = 60.0) -> None:
        with self.cond:
            self.stopped = True
            self.cond.wait_for(lambda: self.busy == 0, timeout)

    def done(self) -> None:
        """Forget a store written to the end (a stopped one stays, to refuse late writes)."""
        _WRITES.pop(self.token, None)


class _Guarded:
    """A zarr array that writes only while its store is wanted (:class:`_Writes`); picklable,
    and a plain writer in another process (a distributed worker)."""

    def __init__(self, target, token: str):
        self.target, self.token = target, token
        self.shape, self.dtype = target.shape, target.dtype

    def __setitem__(self, key, value) -> None:
        w = _WRITES.get(self.token)
        if w is None:
            self.target[key] = value
            return
        with w.cond:
            if w.stopped:
                raise RuntimeError("the store is no longer being written")
            w.busy += 1
        try:
            self.target[key] = value
        finally:
            with w.cond:
                w.busy -= 1
                w.cond.notify_all()


def write_zarr(array, path, *, axes: list[str] | None = None, scale=None, translation=None,
               overwrite: bool = False, compute: bool = True, name: str | None = None,
               inputs: Inputs | None = None, units=None, levels: int | None = 1, made: dict | None = None,
               claim: Claim | None = None):
    """Write a (dask) array to a zarr store chunk by chunk, atomically.

    With ``axes`` (OME-NGFF names in t, c, z, y, x order) the store is an OME-Zarr 0.4 image:
    a group holding the array as level ``0`` with ``multiscales`` metadata (``scale``,
    ``translation`` and ``units`` per axis; built and validated by :func:`napari_liif.ome.multiscales`),
    chunk keys with "/", and ``levels`` pyramid levels in all (None: as
    many as :func:`pyramid_levels` gives; each a 2 x 2 mean of the one before, module
    docstring). Without ``axes``, a plain zarr array. Chunks go to a
    hidden temporary store beside ``path``, which is marked ``napari_liif.complete = true`` and
    renamed to ``path`` once every chunk is written (see :func:`is_complete`).

    An existing ``path`` is replaced only with ``overwrite`` (or when it is an incomplete store of
    ours); a folder holding anything but a zarr store, or anything in ``inputs``, never.
    ``made`` (what made the array: :mod:`napari_liif.provenance`) is kept in the store's
    ``napari_liif`` attribute. ``claim`` (:class:`napari_liif.outputs.Claim`, its ``seen``
    taken before the caller checked ``path``) makes the swap replace only what was checked:
    if another run wrote ``path`` meanwhile, ``claim.outcome`` is ``"identical"`` or an
    :class:`OutputError` is raised. Returns the path, or with ``compute=False`` a dask Delayed
    that writes and swaps in the store when computed.
    """
    import dask
    import dask.array as da

    path = Path(path)
    if claim is None:
        claim = Claim(made).look(path)
    elif made is not None:
        claim.made = Claim(made).made
    check_store(path, inputs, overwrite=overwrite)
    if not overwrite and store_state(path) == "ours":
        raise OutputError(f"{path}: exists (a complete store written by napari-liif); "
                          "pass overwrite=True to replace it")
    a = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    if axes is not None and (len(axes) != a.ndim or [n for n in "tczyx" if n in axes] != list(axes)):
        raise ValueError(f"axes {axes} do not fit OME-NGFF (t, c, z, y, x order, one per dimension of {a.shape})")
    chunks = tuple(c[0] for c in a.chunks)
    if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in a.chunks):
        a = a.rechunk(chunks)
    n_levels = 1 if axes is None else (pyramid_levels(a.shape, axes, chunks) if levels is None else max(1, int(levels)))
    swap = atomic_store(path, claim)
    writes = _Writes()
    tmp = None

    def give_up(exc: BaseException):
        writes.stop()  # stays registered, stopped: a late chunk write from a dask thread is refused
        if tmp is not None:
            swap.__exit__(type(exc), exc, exc.__traceback__)  # removes the temporary store; may raise another

    try:
        with signals_held():  # the temporary is known to give_up before any interrupt is taken
            tmp = swap.__enter__()
        target, marker, root = _create(tmp, a, chunks, axes, scale, translation, name or path.stem, units, n_levels)
        marker.attrs[ZARR_KEY] = {"complete": False}
        stored = da.store(a, writes.into(target), lock=False, compute=False)
    except BaseException as exc:
        give_up(exc)
        raise

    def finish(_stored=None):
        try:
            if n_levels > 1:
                _write_levels(root, axes, chunks, n_levels, writes)
            marker.attrs[ZARR_KEY] = {"complete": True, **({"made": claim.made} if claim.made is not None else {})}
        except BaseException as exc:
            give_up(exc)
            raise
        writes.done()
        swap.__exit__(None, None, None)
        return path

    if not compute:
        return dask.delayed(finish)(stored)
    try:
        stored.compute()
    except BaseException as exc:
        give_up(exc)
        raise
    return finish()


def is_complete(path) -> bool:
    """True if ``path`` is a zarr store that :func:`write_zarr` finished writing."""
    if not is_zarr(path):
        return False
    try:
        node = _open(path)
    except ValueError:
        return False
    return bool(dict(node.attrs.get(ZARR_KEY) or {}).get("complete"))


def _lazy_chunks(shape, chunk: int):
    return tuple(min(n, chunk) if k >= len(shape) - 3 else 1 for k, n in enumerate(shape))


def open_lazy(path, chunk: int = DEFAULT_CHUNK):
    """A file as a dask array without reading it all: zarr, NPY (memory-mapped), TIFF (via
    its zarr view); other formats are read whole, once per process. Failures are one-line
    ImageIOErrors.

    The graph holds paths, not open files (:class:`napari_liif.lazy_read.LazyFile`; zarr stores
    by absolute path), so it runs on the workers of a ``dask.distributed`` cluster, each reading
    its chunks itself; ``chunk`` is the input chunk side (rows and cols)."""
    from .io import ImageIOError, check_signature
    from .lazy_read import lazy_array

    path = Path(path)
    if is_zarr(path):
        return read_zarr(path)
    if path.is_dir():
        raise ImageIOError(f"{path}: is a folder, not an image file or a zarr store")
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ImageIOError(f"{path}: no such file")
    if suffix in (".npy", ".tif", ".tiff"):
        check_signature(path)
    def chunks(shape):
        return _lazy_chunks(shape, chunk)

    try:
        if suffix == ".npy":
            return lazy_array(path, "NPY", chunks)
        if suffix in (".tif", ".tiff"):
            layout = _check_tiff_extent(path)
            if layout.colormap is not None or layout.premultiplied:  # converted as read: decoded whole
                return lazy_array(path, "WHOLE", chunks)
            return lazy_array(path, "TIFF", chunks)
    except ImageIOError:
        raise
    except Exception:  # noqa: BLE001 - a reader's failure on a bad file becomes one line of ours
        raise ImageIOError(f"{path}: corrupt or truncated {suffix[1:].upper()} file") from None
    return lazy_array(path, "WHOLE", chunks)  # decoded here first: a bad file fails now, with its one line


def _check_tiff_extent(path: Path):
    """Refuse a TIFF whose strips or tiles reach past the end of the file: read lazily, chunk by
    chunk, it would otherwise fail (or be zero-filled) deep inside the work. Refuse what the eager
    reader refuses (pages or series of several shapes), and return the file's layout
    (:func:`napari_liif.image_layout.tiff_layout`)."""
    import tifffile

    from .image_layout import UnsupportedImage, tiff_layout
    from .io import ImageIOError

    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        try:
            layout = tiff_layout(tif)
        except UnsupportedImage as exc:
            raise ImageIOError(f"{path}: {exc}") from None
        for page in tif.pages:
            for off, n in zip(page.dataoffsets, page.databytecounts):
                if off + n > size:
                    raise ImageIOError(f"{path}: corrupt or truncated TIFF file")
    return layout
