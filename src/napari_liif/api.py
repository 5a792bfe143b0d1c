"""``upscale``: numpy in, numpy out, any dtype and channel layout.

Layout rules
------------
* The last two non-channel axes are spatial (rows, columns); any leading axes (z, t, ...)
  are a stack, upscaled plane by plane.
* ``rgb=None`` guesses as napari does: a last axis of length 3 or 4 is colour. RGB goes
  through the model as colour; an alpha channel goes through it as a gray image.
* ``channel_axis=k`` marks an axis of independent channels (fluorescence): each channel is
  upscaled as a gray image with its own intensity map, and stays at axis k in the result.
* Gray planes enter the model as R = G = B and leave as the mean of the three outputs.
* RGBA goes through the model *premultiplied*: colour times alpha as colour, alpha as a gray
  image; the result is divided by the upscaled alpha again. Colour under transparent pixels
  never bleeds into the visible ones, and transparent regions stay transparent.
* A constant plane (or one of constant colour) comes back as that constant, exactly.

Intensities are mapped to [0, 1] and back by :class:`~napari_liif.intensity.IntensityMap`,
fitted once over the whole array (per channel with ``channel_axis``), so the planes of a
stack share one map: the robust range by default, or ``limits``/``percentiles``.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import Callable

import numpy as np

from . import flux
from .intensity import IntensityMap, carry, check_options, constant_value

CELL_MODES = ("on", "off", "clamp")  # as napari_liif.field.CELL_MODES (not imported: keeps torch lazy)

Progress = Callable[[int, int], None]


@functools.lru_cache(maxsize=4)
def _cached_model(checkpoint: str | None, device: str, precision: str):
    from .engine import load_model

    return load_model(checkpoint, device=device, precision=precision)


def get_model(model=None, device: str = "auto", precision: str = "fp32"):
    """A ``LiifModel`` from a model, a checkpoint path, or None (the bundled default, cached)."""
    from .engine import LiifModel

    if isinstance(model, LiifModel):
        return model
    if model is not None and not isinstance(model, (str, Path)):
        raise TypeError(f"model must be a LiifModel, a checkpoint path or None, got {type(model).__name__}")
    return _cached_model(None if model is None else str(model), device, precision)


def _number(v, what: str) -> float:
    """``v`` as a finite float, or a ValueError naming ``what`` and the value received."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return f


def _pair(v, what: str) -> tuple:
    """A number or a (rows, cols) pair as a 2-tuple (strings are refused, not split)."""
    if isinstance(v, (str, bytes)):
        raise ValueError(f"{what} must be a number or a (rows, cols) pair, got {v!r}")
    if np.ndim(v) == 0:
        return (v, v)
    pair = tuple(np.asarray(v, dtype=object).ravel()) if np.ndim(v) == 1 else ()
    if len(pair) != 2:
        raise ValueError(f"{what} must be a number or a (rows, cols) pair, got {v!r}")
    return pair


def output_hw(hw: tuple[int, int], scale=None, size=None) -> tuple[int, int]:
    """Output (rows, cols) for ``scale`` (number or per-axis pair) or ``size`` (rows, cols).

    ``scale`` gives ``max(1, round(n * s))`` pixels per axis; ``size`` gives exactly its
    numbers. Errors name the value received.
    """
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale= or size= "
                         f"(got scale={scale!r}, size={size!r})")
    if size is not None:
        pair = _pair(size, "size")
        vals = [_number(s, "size") for s in pair]
        if any(v != int(v) or v < 1 for v in vals):
            raise ValueError(f"size must be two positive integers (rows, cols), got {size!r}")
        return int(vals[0]), int(vals[1])
    pair = _pair(scale, "scale")
    out = []
    for n, s in zip(hw, pair):
        f = _number(s, "scale")
        if f <= 0:
            raise ValueError(f"scale must be a positive number, got {s!r}")
        px = n * f
        if not math.isfinite(px):
            raise MemoryError(f"scale {s!r} gives an output too large to allocate ({n} x {s!r} pixels)")
        out.append(max(1, round(px)))
    return out[0], out[1]


def output_shape(shape, *, scale=None, size=None, channel_axis: int | None = None, rgb: bool | None = None):
    """``(output shape, (rows, cols))`` that :func:`upscale` gives for an input of ``shape``,
    with the same layout rules and errors; nothing is allocated."""
    a = np.broadcast_to(np.uint8(0), tuple(int(n) for n in shape))  # a view: no memory
    a, kind, ch_axis = layout(a, rgb, channel_axis)
    spatial = a.shape[-3:-1] if kind != "gray" else a.shape[-2:]
    if len(spatial) < 2 or a.size == 0:
        raise ValueError(f"image must have two spatial axes and at least one pixel, got shape {tuple(shape)}")
    out_hw = output_hw(tuple(spatial), scale, size)
    lead = a.shape[:-3] if kind != "gray" else a.shape[:-2]
    out = lead + out_hw + ((a.shape[-1],) if kind != "gray" else ())
    if ch_axis is not None:
        out = out[:-1][:ch_axis] + out[-1:] + out[:-1][ch_axis:]
    return tuple(int(n) for n in out), out_hw


def check_allocatable(shape: tuple[int, ...], dtype, what: str = "output", extra_bytes: int = 0) -> None:
    """Refuse, with a clear message, an allocation larger than the memory available.

    ``extra_bytes`` counts working memory needed at the same time (not shown in the shape).
    """
    nbytes = math.prod(int(n) for n in shape) * np.dtype(dtype).itemsize + int(extra_bytes)  # exact ints
    avail = _available_memory()
    if avail and nbytes > avail:
        hint = "use a smaller scale or size"
        if importlib.util.find_spec(f"{__package__}.dask_upscale") is not None:
            hint += ", or upscale_dask / --dask to write it chunk by chunk"
        raise MemoryError(f"the {what} of shape {tuple(int(n) for n in shape)} ({np.dtype(dtype).name}) needs "
                          f"{_gib(nbytes)} but only {_gib(avail)} of memory is available; {hint}")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n < 2**70 else f"about 2^{n.bit_length() - 1} bytes"


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 0


def looks_like_channels(shape) -> bool:
    """True for a shape like (..., H, W, C) whose short last axis (2..32, not colour) is most
    likely channels rather than columns: C at most half of the axis before it."""
    shape = tuple(int(n) for n in shape)
    return len(shape) >= 3 and shape[-1] not in (3, 4) and 2 <= shape[-1] <= 32 and 2 * shape[-1] <= shape[-2]


def layout(a, rgb=None, channel_axis=None):
    """Move channels last; return ``(array, kind, axis)`` with kind in gray|rgb|rgba|channels and
    axis the normalised channel axis (None unless kind is channels). The layout rules of
    :func:`upscale` (numpy and dask arrays alike); ValueErrors name the value."""
    if channel_axis is not None:
        if rgb:
            raise ValueError("give either rgb=True or channel_axis, not both")
        if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis, (int, np.integer)):
            raise ValueError(f"channel_axis must be an integer, got {channel_axis!r}")
        ax = int(channel_axis)
        if not -a.ndim <= ax < a.ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for data of shape {a.shape} "
                             f"({a.ndim} dimensions)")
        return np.moveaxis(a, ax, -1), "channels", ax % a.ndim
    if rgb is not None and not isinstance(rgb, (bool, np.bool_)):
        raise ValueError(f"rgb must be True, False or None, got {rgb!r}")
    if rgb is None:
        rgb = a.ndim >= 3 and a.shape[-1] in (3, 4)
        if not rgb and looks_like_channels(a.shape):
            raise ValueError(f"image of shape {tuple(a.shape)}: its last axis ({a.shape[-1]}) looks like channels, "
                             "not columns; pass channel_axis=-1 (on the command line --channel-axis -1) to "
                             "upscale each channel, or rgb=False to upscale it as a stack of planes")
    if rgb:
        if a.ndim < 3 or a.shape[-1] not in (3, 4):
            raise ValueError(f"rgb=True needs a last axis of length 3 or 4, got shape {a.shape}")
        return a, "rgb" if a.shape[-1] == 3 else "rgba", None
    return a, "gray", None


def upscale(image, *, scale=None, size=None, model=None, cell: str = "on", channel_axis: int | None = None,
            rgb: bool | None = None, limits=None, percentiles=None, progress: Progress | None = None,
            should_stop=None, preserve_flux: bool = False) -> np.ndarray:
    """Upscale an image with LIIF.

    Parameters
    ----------
    image : array-like
        2D gray (H, W); stacks (..., H, W) such as (z, y, x) or (t, z, y, x), upscaled plane by
        plane; RGB(A) (..., H, W, 3|4); or independent channels at ``channel_axis``.
        uint8, uint16, any integer, bool or float (float16/32/64).
    scale : float or (float, float)
        Output/input size ratio (rows, cols); non-integer and anisotropic allowed. Each
        spatial axis of n pixels becomes ``max(1, round(n * scale))`` pixels.
    size : (int, int)
        Output (rows, cols) instead of ``scale``; the grid spans the whole input at pixel
        centres and the cell is (2/rows, 2/cols), as in the official LIIF demo.
    model : LiifModel, path or None
        None uses the bundled default model.
    cell : {"on", "off", "clamp"}
        See :meth:`napari_liif.field.EncodedField.cell`.
    channel_axis : int, optional
        Axis of independent channels (e.g. fluorescence); each channel is upscaled as a
        gray image with its own intensity map, and stays at this axis in the result.
    rgb : bool, optional
        Whether the last axis is colour; None guesses (length 3 or 4 means RGB or RGBA).
    limits : (float, float), optional
        The data values mapped to the model's 0 and 1 (every channel), instead of the robust
        range; e.g. a layer's contrast limits.
    percentiles : (float, float), optional
        Percentiles (0..100) of the valid values (per channel) mapped to 0 and 1 instead.
    progress : callable(done, total), optional
        Called as output blocks are rendered, with counts of output pixels (all planes together).
    should_stop : callable() -> bool, optional
        Checked between planes; when true an ``InterruptedError`` is raised.
    preserve_flux : bool
        Correct each plane so that its area average over every input pixel equals that pixel
        (:func:`napari_liif.flux.preserve_flux`; docs/microscopy.md): exact for float data, exact
        block sums for integer data at integer scales. Needs a scale of at least 1 and finite data.

    Returns
    -------
    numpy.ndarray with the input's dtype and channel layout, spatial axes resized.

    Notes
    -----
    Intensities: uint8 and bool use the dtype range, other dtypes the robust range of the valid
    values of the whole array (of each channel with ``channel_axis``; of the three colours
    together for RGB), so a stack keeps one consistent map across its planes: the data range,
    trimmed where outliers such as hot pixels lie more than a robust span beyond the 0.1st and
    99.9th percentiles. Values outside the map's range (outliers, or outside ``limits`` /
    ``percentiles``) enter the model clipped and come back unchanged by nearest neighbour. Alpha
    uses its dtype range (0..1 for floats). Valid values are finite and not
    nodata (float32 values at +-3.4e38, float64 ones there or at +-1.8e308); NaN, +-inf and nodata
    are *masked*: never interpolated, each is put back wherever its pixel is the nearest input
    pixel of an output pixel (NaN stays NaN; an all-NaN image comes back all NaN). Every finite
    result lies within the input's valid range (:mod:`napari_liif.intensity`). Gray data enters
    the model as R = G = B and leaves as the mean of the three outputs. A plane whose valid
    values are all equal (or a plane of constant colour) is returned as that constant without
    running the model.

    Raises
    ------
    ValueError
        bad scale, size, channel_axis, rgb, cell, limits, percentiles or an empty/shapeless image; a last axis that
        looks like channels (2..32 long, not 3 or 4) with neither ``channel_axis`` nor ``rgb``.
    TypeError
        data that is not integer, bool or float (object, strings, complex).
    MemoryError
        an output (with its working memory) larger than the memory available.
    """
    a = _as_array(image)
    for name, fn in (("progress", progress), ("should_stop", should_stop)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a callable or None, got {type(fn).__name__}")
    if not isinstance(cell, str) or cell not in CELL_MODES:
        raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
    check_options(limits, percentiles)
    a, kind, ch_axis = layout(a, rgb, channel_axis)
    spatial = a.shape[-3:-1] if kind != "gray" else a.shape[-2:]
    if len(spatial) < 2 or a.size == 0:
        raise ValueError(f"image must have two spatial axes and at least one pixel, got shape {np.shape(image)}")
    out_hw = output_hw(tuple(spatial), scale, size)
    lead = a.shape[:-3] if kind != "gray" else a.shape[:-2]
    tail = (a.shape[-1],) if kind != "gray" else ()
    out_shape = lead + out_hw + tail
    # the output, plus one plane of float32 RGB from the renderer and ~3 float64 planes while mapping back
    check_allocatable(out_shape, a.dtype, extra_bytes=(12 + 24) * out_hw[0] * out_hw[1])
    if preserve_flux:
        flux.check_preservable(a, tuple(spatial), out_hw)
    m = get_model(model)
    out = np.empty(out_shape, a.dtype)
    maps = intensity_maps(a, kind, limits, percentiles)
    planes = list(np.ndindex(*lead)) if lead else [()]
    jobs = [(p, c) for p in planes for c in channel_jobs(kind, a.shape[-1] if tail else 0)]
    per_job = out_hw[0] * out_hw[1]  # progress is counted in output pixels
    total = per_job * len(jobs)
    for k, (p, c) in enumerate(jobs):
        if should_stop is not None and should_stop():
            raise InterruptedError(f"stopped after {k} of {len(jobs)} planes")
        src, dst = job_part(a[p], c), job_part(out[p], c)
        const = constant_value(src, c in ("rgb", "rgba"))
        if const is not None:
            dst[...] = const  # a constant plane stays exactly constant
        else:
            tick = None if progress is None else (lambda d, n, k=k: progress(k * per_job + per_job * d // n, total))

            def render(u, tick=tick):
                res = m.encode(u).render(shape=out_hw, cell=cell, progress=tick)
                if not np.isfinite(res).all():
                    raise RuntimeError(f"the model {m.name} produced non-finite values (NaN or inf); "
                                       "its weights are broken: use another checkpoint")
                return res

            alpha = constant_value(src[..., 3], False) if c == "rgba" else None
            dst[...] = render_job(src, c, maps, render, alpha)
        carry_job(src, dst, c, maps)  # NaN, inf, nodata and outliers stay where their pixels are nearest
        if preserve_flux:
            dst[...] = flux.preserve_flux(dst, src, dtype=a.dtype)
        if progress is not None:
            progress((k + 1) * per_job, total)
    return out if ch_axis is None else np.moveaxis(out, -1, ch_axis)


def job_part(a: np.ndarray, what):
    """The part of a plane (H, W[, C]) that a job works on: all of it for gray, RGB and RGBA
    (``what`` None, "rgb", "rgba"), one channel for an integer ``what``."""
    return a[..., what] if isinstance(what, int) else a


def render_job(src: np.ndarray, what, maps: dict, render, alpha_const=None) -> np.ndarray:
    """One job's upscaled values in data units, from ``render(u)`` (u: (H, W) or (H, W, 3) in
    [0, 1] -> (rows, cols, 3)). RGBA renders colour times alpha and alpha, then divides; with an
    alpha plane of constant value ``alpha_const`` the colour is rendered as it is and the alpha
    stays that constant exactly."""
    if what == "rgba" and alpha_const is not None:
        colour = maps["rgb"].inverse(render(maps["rgb"].forward(src[..., :3])))
        out = np.empty(colour.shape[:2] + (4,), src.dtype)
        out[..., :3] = colour
        out[..., 3] = alpha_const
        return out
    if what == "rgba":
        amap, cmap = maps[3], maps["rgb"]
        ua = amap.forward(src[..., 3])
        colour = render(cmap.forward(src[..., :3]) * ua[..., None])
        alpha = render(ua).mean(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            straight = np.where(alpha[..., None] > 0, colour / alpha[..., None], 0.0)
        out = np.empty(alpha.shape + (4,), src.dtype)
        out[..., :3] = cmap.inverse(np.clip(straight, 0.0, 1.0))
        out[..., 3] = amap.inverse(alpha)
        return out
    res = render(maps[what].forward(src))
    return maps[what].inverse(res if what == "rgb" else res.mean(-1))


def carry_job(src: np.ndarray, dst: np.ndarray, what, maps: dict, rows=None, cols=None) -> None:
    """Masked and out-of-range input values back into ``dst`` by nearest neighbour
    (:func:`napari_liif.intensity.carry`; ``rows``/``cols`` as there)."""
    if what == "rgba":
        carry(src[..., :3], dst[..., :3], maps["rgb"], rows, cols)
        carry(src[..., 3], dst[..., 3], maps[3], rows, cols)
    else:
        carry(src, dst, maps[what], rows, cols)


def _as_array(image) -> np.ndarray:
    try:
        a = np.asarray(image)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        raise ValueError(f"image must be an array of numbers, got {type(image).__name__} "
                         f"({str(exc).splitlines()[0][:80]})") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"cannot upscale data of dtype {a.dtype}; expected integer, float or bool data")
    return a


def channel_jobs(kind: str, n: int) -> list:
    """The jobs of one plane: None (gray), "rgb", "rgba", or each channel's index."""
    if kind == "gray":
        return [None]
    if kind == "channels":
        return list(range(n))
    return [kind]


def map_keys(kind: str, n: int) -> dict:
    """``{map key: (selection of a channels-last array, colour)}`` of the maps a layout needs:
    None (gray), each channel, "rgb" (and 3, the alpha, for RGBA)."""
    if kind == "gray":
        return {None: ((Ellipsis,), False)}
    if kind == "channels":
        return {c: ((Ellipsis, c), False) for c in range(n)}
    keys = {"rgb": ((Ellipsis, slice(0, 3)), True)}
    if kind == "rgba":
        keys[3] = ((Ellipsis, 3), False)
    return keys


def intensity_maps(a: np.ndarray, kind: str, limits=None, percentiles=None) -> dict:
    """The intensity maps of a channels-last array, by :func:`map_keys` (alpha: its dtype range)."""
    maps = {}
    for key, (sel, colour) in map_keys(kind, a.shape[-1] if kind != "gray" else 0).items():
        if key == 3:
            maps[key] = IntensityMap.alpha(a.dtype)
        elif limits is not None:
            maps[key] = IntensityMap.of(a.dtype, *limits)
        else:
            maps[key] = IntensityMap.fit(a[sel], percentiles=percentiles, colour=colour)
    return maps
