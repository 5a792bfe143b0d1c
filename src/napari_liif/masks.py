"""Masked arrays (``numpy.ma``, and dask arrays of them) in ``upscale`` and ``upscale_dask``: the
mask is honoured as NaN is.

A masked value neither widens the intensity range nor reaches the model as itself (it enters as
NaN does: as the map's low end), and is never interpolated into a valid pixel. The result is a
masked array: an output pixel is masked where its nearest input pixel is, and holds that input
pixel's raw value there (as NaN is carried). Float data is upscaled in its own dtype with the
masked values set to NaN; integer and bool data is upscaled as float64 (the dtype-range map of
uint8 and bool kept) and rounded back, so 64-bit integers beyond 2^53 cannot be masked.
"""

from __future__ import annotations

import numpy as np

from .intensity import nearest_index

EXACT_FLOAT64 = 2**53  # integers float64 holds exactly


def is_masked(image) -> bool:
    """True for a numpy masked array or a dask array whose chunks are masked arrays."""
    if isinstance(image, np.ma.MaskedArray):
        return True
    return type(image).__name__ == "Array" and isinstance(getattr(image, "_meta", None), np.ma.MaskedArray)


def _dask():
    import dask.array as da

    return da


def _split(image, lazy: bool):
    """``(raw data, mask)`` of a masked numpy or dask array (the mask as a full boolean array)."""
    if lazy:
        da = _dask()
        a = image if not isinstance(image, np.ma.MaskedArray) else da.from_array(image, chunks="auto")
        return da.ma.getdata(a), da.ma.getmaskarray(a)
    return np.ma.getdata(image), np.ma.getmaskarray(image)


def _as_nan_float(data, mask, kw: dict, lazy: bool):
    """The data as float with NaN where masked, and the keyword arguments that keep integer data's
    intensity map (uint8 and bool: the dtype range)."""
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"cannot upscale data of dtype {dtype}; expected integer, float or bool data")
    where = _dask().where if lazy else np.where
    if dtype.kind == "f":
        return where(mask, np.array(np.nan, dtype), data), kw
    if dtype.kind in "iu" and dtype.itemsize == 8:
        _check_exact(data, mask, lazy)
    if kw.get("limits") is None and kw.get("percentiles") is None and (dtype == np.uint8 or dtype.kind == "b"):
        kw = {**kw, "limits": (0, 255 if dtype == np.uint8 else 1)}
    return where(mask, np.nan, data.astype(np.float64)), kw


def _check_exact(data, mask, lazy: bool) -> None:
    if lazy:
        import dask

        valid = _dask().where(mask, 0, data)
        lo, hi = (int(v) for v in dask.compute(valid.min(), valid.max()))
    else:
        valid = data[~mask]
        if valid.size == 0:
            return
        lo, hi = int(valid.min()), int(valid.max())
    if max(abs(lo), abs(hi)) > EXACT_FLOAT64:
        raise ValueError(f"a masked {data.dtype} array with values beyond 2^53 ({lo} to {hi}) cannot be upscaled "
                         "exactly; fill the masked values (e.g. a.filled(...)) and pass a plain array")


def _nearest(a, in_shape, out_shape):
    """``a`` (of ``in_shape``) resampled by nearest neighbour to ``out_shape``, axis by axis."""
    for k, (n_in, n_out) in enumerate(zip(in_shape, out_shape)):
        if n_in != n_out:
            a = a[(slice(None),) * k + (nearest_index(n_in, n_out),)]
    return a


def _finish(values, raw, mask, dtype):
    """Upscaled float ``values`` back in ``dtype``, with ``raw`` (the nearest input values) where
    ``mask`` is set."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        out = np.nan_to_num(values) >= 0.5
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        out = np.clip(np.rint(np.nan_to_num(values)), info.min, info.max).astype(dtype)
    else:
        out = np.asarray(values, dtype).copy()
    np.copyto(out, raw, where=mask)
    return out


def upscale_masked(fn, image, lazy: bool = False, **kw):
    """``fn(data, **kw)`` (``upscale`` or, ``lazy``, ``upscale_dask``) of a masked array, honouring its
    mask (module docstring); a masked array (numpy), or a dask array of masked chunks."""
    data, mask = _split(image, lazy)
    if not lazy and not mask.any():  # nothing masked: the plain array's result, exactly
        out = fn(data, **kw)
        return np.ma.MaskedArray(out, mask=np.zeros(out.shape, bool))
    if kw.get("preserve_flux"):
        raise ValueError(f"preserve_flux needs every pixel, and {int(mask.sum())} are masked; fill them "
                         "(a.filled(...)) or upscale without preserve_flux")
    filled, kw = _as_nan_float(data, mask, kw, lazy)
    out = fn(filled, **kw)
    raw, near = _nearest(data, data.shape, out.shape), _nearest(mask, mask.shape, out.shape)
    if not lazy:
        return np.ma.MaskedArray(_finish(out, raw, near, data.dtype), mask=near)
    da = _dask()
    raw, near = raw.rechunk(out.chunks), near.rechunk(out.chunks)
    values = da.map_blocks(_finish, out, raw, near, data.dtype, dtype=data.dtype,
                           meta=np.empty((0,) * out.ndim, data.dtype))
    return da.ma.masked_array(values, mask=near)
