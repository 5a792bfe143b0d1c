"""Upscaling along z: anisotropic stacks made (closer to) isotropic with the 2-D model.

A ``scale`` of three numbers ``(SZ, SY, SX)`` (or a ``size`` of three, ``(Z, Y, X)``) asks for z
too. The z axis is the one before the two spatial axes. Each XZ plane (one per row) and each YZ
plane (one per column) is upscaled along its z axis only, at the anisotropic size
``(Z_out, X)`` / ``(Z_out, Y)``: its cell is ``(Z / Z_out, 1)`` latents, so the model is told
that only z is being refined. The two results are averaged (integers rounded half up, exactly,
with no overflow), then each z plane is upscaled in y and x as a 2-D image. Every pass uses the
intensity maps fitted once on the input (per channel), so channels and time stay apart and
masked and out-of-range values are carried back as ``upscale`` carries them.

Geometry: output plane ``j`` is centred at input z ``(j + 0.5) * Z / Z_out - 0.5``, the same
pixel-centre rule as y and x, so :meth:`napari_liif.calibration.Calibration.upscaled` gives the
output's z spacing and origin. The module takes the 2-D functions as arguments (no import of
``api``): ``api`` and ``dask_upscale`` call it with their plane renderers.
"""

from __future__ import annotations

import math

import numpy as np

_FIX = ("give three numbers Z,Y,X for a stack (e.g. --scale 3,1,1), or S / SY,SX for the "
        "y and x axes only")


def three(value) -> bool:
    """True when ``value`` (a scale or size) has three entries: z is asked for."""
    return not isinstance(value, (str, bytes)) and np.ndim(value) == 1 and len(value) == 3


def split(scale=None, size=None):
    """``(z spec, yx scale, yx size)`` of a three-number ``scale`` or ``size``; None when z is
    not asked for. The z spec is ``("scale", sz)`` or ``("size", Z_out)``. A z factor below 1
    is refused (reducing z is not what this is for; ``size`` may still give any Z_out)."""
    if not (three(scale) or three(size)):
        return None
    if scale is not None and size is not None:
        raise ValueError(f"give exactly one of scale= or size= (got scale={scale!r}, size={size!r})")
    if scale is not None:
        sz = _positive(scale[0], "z scale")
        if sz < 1:
            raise ValueError(f"z scale {scale[0]!r} is below 1: napari-liif refines z, it does not thin it; "
                             "give a z factor of at least 1, or an exact output depth with size Z,Y,X")
        return ("scale", sz), (scale[1], scale[2]), None
    nz = _positive(size[0], "size")
    if nz != int(nz):
        raise ValueError(f"size must be three positive integers Z,Y,X, got {size!r}")
    return ("size", int(nz)), None, (size[1], size[2])


def _positive(v, what: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {v!r}")
    f = float(v)
    if not (math.isfinite(f) and f > 0):
        raise ValueError(f"{what} must be a positive finite number, got {v!r}")
    return f


def z_out(n: int, zspec) -> int:
    """Output depth for ``n`` input planes: ``max(1, round(n * sz))`` as y and x, or the size."""
    kind, v = zspec
    if kind == "size":
        return int(v)
    px = n * v
    if not math.isfinite(px) or px > 2**40:
        raise MemoryError(f"z scale {v!r} gives an output too large to allocate ({n} x {v!r} planes)")
    return max(1, round(px))


def z_axis(ndim: int, kind: str, shape, given=None) -> int:
    """The z axis of a channels-last array of ``kind`` (gray | rgb | rgba | channels); ``given``,
    the scale or size asked for, is named in the error."""
    zax = ndim - (3 if kind == "gray" else 4)
    if zax < 0:
        what = "a z factor" if given is None else f"{tuple(given)} asks for a z factor, which"
        raise ValueError(f"{what} needs a stack with a z axis before the rows and columns; image of shape "
                         f"{tuple(shape)} has none: {_FIX}")
    return zax


def mean_of(a, b):
    """The element-wise mean of two results of one dtype: integers rounded half up exactly (no
    overflow, no float detour: exact for 64-bit data), bool as either, floats in float64."""
    if a.dtype == np.bool_:
        return a | b
    if a.dtype.kind in "iu":
        return (a >> 1) + (b >> 1) + ((a & 1) | (b & 1))
    return ((a.astype(np.float64) + b) / 2).astype(a.dtype)


def upscale_volume(a, kind: str, zspec, yx_scale, yx_size, upscale2d):
    """z, then y and x, for a channels-last array ``a`` of ``kind`` (numpy or dask);
    ``upscale2d(array, scale, size)`` upscales the planes (last two axes before any channel or
    colour axis) of an array of the same kind, with the intensity maps fitted on ``a``."""
    zax = z_axis(a.ndim, kind, a.shape)
    nz, ny, nx = a.shape[zax], a.shape[zax + 1], a.shape[zax + 2]
    nzo = z_out(nz, zspec)
    xz = upscale2d(_swap(a, zax, zax + 1), None, (nzo, nx))  # planes (Z, X), one per row
    yz = upscale2d(_move(a, zax + 2, zax), None, (nzo, ny))  # planes (Z, Y), one per column
    mid = mean_of(*_aligned(_swap(xz, zax, zax + 1), _move(yz, zax, zax + 2), zax))
    if yx_size is None and all(float(s) == 1.0 for s in np.broadcast_to(np.asarray(yx_scale, dtype=object), 2)):
        return mid
    return upscale2d(mid, yx_scale, yx_size)


def _aligned(xz, yz, zax: int):
    """Dask results of the two passes on common chunks: the XZ pass is chunked in rows and the
    YZ pass in columns, and their element-wise mean would otherwise be cut into one chunk per
    pixel column."""
    if isinstance(xz, np.ndarray):
        return xz, yz
    return xz, yz.rechunk(xz.chunks)


def _swap(a, i, j):
    return a.swapaxes(i, j)


def _move(a, src, dst):
    if isinstance(a, np.ndarray):
        return np.moveaxis(a, src, dst)
    import dask.array as da

    return da.moveaxis(a, src, dst)


def output_shape(shape, kind: str, zspec, yx_hw: tuple[int, int], given=None) -> tuple:
    """The channels-last output shape of :func:`upscale_volume` (``yx_hw`` already resolved)."""
    zax = z_axis(len(shape), kind, shape, given)
    out = list(shape)
    out[zax] = z_out(shape[zax], zspec)
    out[zax + 1], out[zax + 2] = yx_hw
    return tuple(int(n) for n in out)


def isotropic_factor(z_spacing: float, y_pixel: float, yx_scale: float = 1.0) -> float:
    """The z factor that makes the output's z spacing equal its y pixel size, for an xy
    ``yx_scale``: ``z_spacing / y_pixel * yx_scale``; a clear error for missing calibration."""
    for v, what in ((z_spacing, "z spacing"), (y_pixel, "pixel size")):
        if v is None or not (math.isfinite(v) and v > 0):
            raise ValueError(f"isotropic z needs the {what} of the stack, got {v!r}: give the file's calibration "
                             "(ImageJ or OME metadata, or layer scale) or an explicit z factor (--scale Z,Y,X)")
    return z_spacing / y_pixel * yx_scale
