"""Zarr and OME-Zarr in and out, and files opened lazily as dask arrays.

* :func:`read_zarr` opens a zarr array, an OME-Zarr image (its full-resolution level) or a group
  holding one array; :func:`read_ome_metadata` gives its axes, scale and translation.
* :func:`write_zarr` writes chunk by chunk into a hidden temporary store beside the destination and
  swaps it in once every chunk is written (:mod:`napari_liif.outputs`): a store under its final
  name is always complete, and carries ``napari_liif.complete = true``. It never replaces a folder
  that holds anything other than a zarr store, nor a store that was not written by napari-liif
  unless ``overwrite``.
* :func:`open_lazy` reads TIFF (through tifffile's zarr view), NPY (memory-mapped) and zarr
  without loading them; other formats are read whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .outputs import ZARR_KEY, Inputs, OutputError, atomic_store, check_store

DEFAULT_CHUNK = 512
OME_VERSION = "0.4"
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def is_zarr(path) -> bool:
    """True for a zarr store directory (v2 or v3, array or group)."""
    p = Path(path)
    return p.is_dir() and any((p / f).is_file() for f in (".zarray", ".zgroup", "zarr.json"))


def _multiscales(attrs) -> list:
    attrs = dict(attrs)
    return attrs.get("multiscales") or dict(attrs.get("ome") or {}).get("multiscales") or []


def _open(path):
    import zarr

    try:
        return zarr.open(str(path), mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        from .io import ImageIOError

        raise ImageIOError(f"{path}: not a readable zarr store (bad or missing metadata)") from None


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
    """``{'axes': [...], 'scale': [...], 'translation': [...]}`` of an OME-Zarr's first level."""
    import zarr

    node = _open(path)
    ms = _multiscales(node.attrs) if not isinstance(node, zarr.Array) else []
    if not ms:
        return None
    axes = [a["name"] if isinstance(a, dict) else str(a) for a in ms[0].get("axes", [])]
    meta = {"axes": axes, "scale": None, "translation": None}
    for t in ms[0]["datasets"][0].get("coordinateTransformations", []):
        if t.get("type") in ("scale", "translation"):
            meta[t["type"]] = [float(v) for v in t[t["type"]]]
    return meta


def guess_axes(ndim: int, *, channel_axis: int | None = None, rgb: bool = False) -> list[str] | None:
    """OME-NGFF axis names for a layout, or None where it does not fit OME (trailing RGB)."""
    if rgb:
        return None
    n_sp = ndim - (channel_axis is not None)
    names = {2: ["y", "x"], 3: ["z", "y", "x"], 4: ["t", "z", "y", "x"]}.get(n_sp)
    if names is None:
        return None
    if channel_axis is not None:
        names.insert(channel_axis % ndim, "c")
    order = [n for n in "tczyx" if n in names]
    return names if names == order else None


def upscaled_transform(scale, translate, in_hw, out_hw):
    """Scale and translate of the upscaled spatial axes so they overlay the input exactly.

    Output pixel ``j`` covers input edges ``[j r, (j + 1) r]`` with ``r = n_in / n_out``;
    its centre is at input data coordinate ``(j + 0.5) r - 0.5``; so the new scale is
    ``scale * r`` and the new translate ``translate + scale * (0.5 r - 0.5)``.
    """
    r = [i / o for i, o in zip(in_hw, out_hw)]
    return ([s * k for s, k in zip(scale, r)],
            [t + s * (0.5 * k - 0.5) for t, s, k in zip(translate, scale, r)])


def _create(tmp: Path, a, chunks, axes, scale, translation, name):
    """Create the (empty) store at ``tmp``; return (target array, node carrying our marker)."""
    import zarr

    if axes is None:
        target = zarr.open_array(str(tmp), mode="w-", shape=a.shape, chunks=chunks, dtype=a.dtype, zarr_format=2)
        return target, target
    root = zarr.open_group(str(tmp), mode="w-", zarr_format=2)
    target = root.create_array("0", shape=a.shape, chunks=chunks, dtype=a.dtype)
    transforms = [{"type": "scale", "scale": [float(v) for v in (scale or [1.0] * a.ndim)]}]
    if translation is not None:
        transforms.append({"type": "translation", "translation": [float(v) for v in translation]})
    root.attrs["multiscales"] = [{
        "version": OME_VERSION, "name": name,
        "axes": [{"name": n, "type": _AXIS_TYPES[n]} for n in axes],
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }]
    return target, root


def write_zarr(array, path, *, axes: list[str] | None = None, scale=None, translation=None,
               overwrite: bool = False, compute: bool = True, name: str | None = None,
               inputs: Inputs | None = None):
    """Write a (dask) array to a zarr store chunk by chunk, atomically.

    With ``axes`` (OME-NGFF names in t, c, z, y, x order) the store is an OME-Zarr 0.4 image:
    a group holding the array as level ``0`` with minimal ``multiscales`` metadata (one
    level; ``scale``/``translation`` per axis). Without, a plain zarr array. Chunks go to a
    hidden temporary store beside ``path``, which is marked ``napari_liif.complete = true`` and
    renamed to ``path`` once every chunk is written (see :func:`is_complete`).

    An existing ``path`` is replaced only with ``overwrite`` (or when it is an incomplete store of
    ours); a folder holding anything but a zarr store, or anything in ``inputs``, never.
    Returns the path, or with ``compute=False`` a dask Delayed that writes and swaps in the
    store when computed.
    """
    import dask
    import dask.array as da

    path = Path(path)
    if check_store(path, inputs, overwrite=overwrite) == "skip":
        raise OutputError(f"{path}: exists (a complete store written by napari-liif); "
                          "pass overwrite=True to replace it")
    a = array if isinstance(array, da.Array) else da.from_array(np.asarray(array))
    if axes is not None and (len(axes) != a.ndim or [n for n in "tczyx" if n in axes] != list(axes)):
        raise ValueError(f"axes {axes} do not fit OME-NGFF (t, c, z, y, x order, one per dimension of {a.shape})")
    chunks = tuple(c[0] for c in a.chunks)
    if any(len(set(c[:-1])) > 1 or c[-1] > c[0] for c in a.chunks):
        a = a.rechunk(chunks)
    swap = atomic_store(path)
    tmp = swap.__enter__()
    try:
        target, marker = _create(tmp, a, chunks, axes, scale, translation, name or path.stem)
        marker.attrs[ZARR_KEY] = {"complete": False}
        stored = da.store(a, target, lock=False, compute=False)
    except BaseException as exc:
        swap.__exit__(type(exc), exc, exc.__traceback__)
        raise

    def finish(_stored=None):
        marker.attrs[ZARR_KEY] = {"complete": True}
        swap.__exit__(None, None, None)
        return path

    if not compute:
        return dask.delayed(finish)(stored)
    try:
        stored.compute()
    except BaseException as exc:
        swap.__exit__(type(exc), exc, exc.__traceback__)
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
    its zarr view); other formats are read whole. Failures are one-line ImageIOErrors."""
    import dask.array as da

    from .io import ImageIOError, check_signature, read_image

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
    try:
        if suffix == ".npy":
            mm = np.load(path, mmap_mode="r", allow_pickle=False)
            return da.from_array(mm, chunks=_lazy_chunks(mm.shape, chunk))
        if suffix in (".tif", ".tiff"):
            import tifffile
            import zarr

            _check_tiff_extent(path)
            z = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
            z = z if isinstance(z, zarr.Array) else z[sorted(z.array_keys())[0]]
            return da.from_zarr(z)
    except ImageIOError:
        raise
    except Exception:  # noqa: BLE001 - a reader's failure on a bad file becomes one line of ours
        raise ImageIOError(f"{path}: corrupt or truncated {suffix[1:].upper()} file") from None
    a = read_image(path)
    return da.from_array(a, chunks=_lazy_chunks(a.shape, chunk))


def _check_tiff_extent(path: Path) -> None:
    """Refuse a TIFF whose strips or tiles reach past the end of the file: read lazily, chunk by
    chunk, it would otherwise fail (or be zero-filled) deep inside the work."""
    import tifffile

    from .io import ImageIOError

    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            for off, n in zip(page.dataoffsets, page.databytecounts):
                if off + n > size:
                    raise ImageIOError(f"{path}: corrupt or truncated TIFF file")
