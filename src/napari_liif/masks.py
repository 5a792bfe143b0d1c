"""Masked arrays (``numpy.ma``, and dask arrays of them) in ``upscale`` and ``upscale_dask``: the
mask is honoured as NaN is.

A masked value neither widens the intensity range nor reaches the model as itself (it enters as
NaN does: as the map's low end), and is never interpolated into a valid pixel. The result is a
masked array: an output pixel is masked where its nearest input pixel is, and holds that input
pixel's raw value there (as NaN is carried). Float data is upscaled in its own dtype with the
masked values set to NaN; uint8 and bool data (at their dtype range) in their own dtype with the
masked values at their channel's least valid value (a NaN enters at the range's low end, which
for these is the dtype's, not the data's); other integer data (and uint8
or bool under user limits) as float64 with NaN, rounded back (an RGBA alpha keeps its dtype
range), so 64-bit integers beyond 2^53 cannot be masked.
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


def _is_rgba(shape, kw: dict) -> bool:
    return (kw.get("channel_axis") is None and kw.get("rgb") is not False and len(shape) >= 3 and shape[-1] == 4)


def _lowest_valid(data, mask, kw: dict, xp):
    """The least valid value of each channel (colour, or ``channel_axis``), broadcastable to ``data``:
    what a masked uint8 or bool value becomes, so that it neither widens nor drags down the
    valid values around it."""
    axis = kw.get("channel_axis")
    if axis is None and data.ndim >= 3 and kw.get("rgb") is not False and data.shape[-1] in (3, 4):
        axis = -1
    others = tuple(k for k in range(data.ndim) if axis is None or k != int(axis) % data.ndim)
    top = np.array(np.iinfo(data.dtype).max if data.dtype.kind == "u" else True, data.dtype)
    return xp.where(mask, top, data).min(axis=others, keepdims=True)


def _prepare(data, mask, kw: dict, lazy: bool):
    """``(data to upscale, keyword arguments, alpha scale)``: floats with NaN where masked; uint8
    and bool at their dtype range with masked values at their channel's least valid value;
    other integers as float64 with NaN, an RGBA alpha divided by ``alpha scale`` (float alpha is
    mapped from [0, 1])."""
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"cannot upscale data of dtype {dtype}; expected integer, float or bool data")
    xp = _dask() if lazy else np
    if dtype.kind == "f":
        return xp.where(mask, np.array(np.nan, dtype), data), kw, None
    if kw.get("limits") is None and kw.get("percentiles") is None and (dtype == np.uint8 or dtype.kind == "b"):
        return xp.where(mask, _lowest_valid(data, mask, kw, xp), data), kw, None
    if dtype.kind in "iu" and dtype.itemsize == 8:
        _check_exact(data, mask, lazy)
    filled = xp.where(mask, np.nan, data.astype(np.float64))
    if not _is_rgba(data.shape, kw):
        return filled, kw, None
    top = float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0
    return xp.concatenate([filled[..., :3], filled[..., 3:] / top], axis=-1), kw, top


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


def _finish(values, raw, mask, dtype, top=None):
    """Upscaled ``values`` back in ``dtype`` (an alpha times ``top``), with ``raw`` (the nearest input
    values) where ``mask`` is set."""
    dtype = np.dtype(dtype)
    if top is not None:
        values = np.concatenate([values[..., :3], values[..., 3:] * top], axis=-1)
    if values.dtype == dtype:
        out = values.copy()
    elif dtype.kind == "b":
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
    filled, kw, top = _prepare(data, mask, kw, lazy)
    out = fn(filled, **kw)
    raw, near = _nearest(data, data.shape, out.shape), _nearest(mask, mask.shape, out.shape)
    if not lazy:
        return np.ma.MaskedArray(_finish(out, raw, near, data.dtype, top), mask=near)
    da = _dask()
    raw, near = raw.rechunk(out.chunks), near.rechunk(out.chunks)
    values = da.map_blocks(_finish, out, raw, near, data.dtype, top, dtype=data.dtype,
                           meta=np.empty((0,) * out.ndim, data.dtype))
    return da.ma.masked_array(values, mask=near)
