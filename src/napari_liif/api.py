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

The rules for a plane (intensity maps, premultiplied RGBA, carried values) are
:mod:`napari_liif.codec`'s: a map is fitted once over the whole array (per channel with
``channel_axis``), so the planes of a stack share one map and each channel has its own: the
robust range by default, or ``limits``/``percentiles``.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import Callable

import numpy as np

from . import flux, isotropic
from .codec import PlaneCodec, channel_jobs, intensity_maps, job_part, layout
from .intensity import check_options, constant_value
from .local_means import keep_local_means
from .masks import is_masked, upscale_masked

CELL_MODES = ("on", "off", "clamp")  # as napari_liif.field.CELL_MODES (not imported: keeps torch lazy)

Progress = Callable[[int, int], None]
MAX_SIDE = 2**40  # pixels along one output axis: a row of a terabyte; past it, sizes are typos (e.g. 1e300)


@functools.lru_cache(maxsize=4)
def _cached_model(checkpoint: str | None, device: str, precision: str):
    from .engine import load_model

    return load_model(checkpoint, device=device, precision=precision)


def get_model(model=None, device: str = "auto", precision: str = "fp32"):
    """A ``LiifModel`` from a model, a checkpoint path, or None (the bundled default); loaded once
    per process for these arguments (the four latest kept), however many threads ask at once."""
    from .engine import LiifModel
    from .loading import building

    if isinstance(model, LiifModel):
        return model
    if model is not None and not isinstance(model, (str, Path)):
        raise TypeError(f"model must be a LiifModel, a checkpoint path or None, got {type(model).__name__}")
    with building():  # the cache's lookup and fill together: the second asker waits for the first load
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
        if max(vals) > MAX_SIDE:
            raise MemoryError(f"size {size!r} is too large to allocate (more than {MAX_SIDE:,} pixels along an "
                              "axis); give a smaller size")
        return int(vals[0]), int(vals[1])
    pair = _pair(scale, "scale")
    out = []
    for n, s in zip(hw, pair):
        f = _number(s, "scale")
        if f <= 0:
            raise ValueError(f"scale must be a positive number, got {s!r}")
        px = n * f
        if not px <= MAX_SIDE:
            raise MemoryError(f"scale {f:g} would make an axis of {n} pixels {px:.3g} pixels long, too large to "
                              f"allocate (at most {MAX_SIDE:,}); give a smaller scale")
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
    zsplit = isotropic.split(scale, size)
    if zsplit is not None:
        out_hw = output_hw(tuple(spatial), *zsplit[1:])
        out = isotropic.output_shape(a.shape, kind, zsplit[0], out_hw, scale if size is None else size)
    else:
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
    scale : float or (float, float) or (float, float, float)
        Output/input size ratio (rows, cols); non-integer and anisotropic allowed. Each
        spatial axis of n pixels becomes ``max(1, round(n * scale))`` pixels. Three numbers
        (z, rows, cols) upscale the stack's z axis too (:mod:`napari_liif.isotropic`).
    size : (int, int) or (int, int, int)
        Output (rows, cols), or (z, rows, cols), instead of ``scale``; the grid spans the whole input at pixel
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
    preserve_flux : bool or "exact" or "local"
        True or ``"exact"``: correct each plane so that its area average over every input pixel
        equals that pixel (:func:`napari_liif.flux.preserve_flux`; docs/microscopy.md): exact for
        float data, exact block sums for integer data at integer scales. Carried outliers keep
        their value on their footprint (their own averages are not asked for; their neighbours'
        are taken without them), and no other value leaves the range of the values the map holds;
        where two averages cannot both be kept inside it, the closest values reached.
        ``"local"``: bring the plane's local means (a Gaussian of 1 input pixel) back to the
        input's without putting back its pixel-scale noise
        (:func:`napari_liif.local_means.keep_local_means`). Both need a scale of at least 1 and
        finite data.

    Returns
    -------
    numpy.ndarray with the input's dtype and channel layout, spatial axes resized; a masked array
    for a masked array (:mod:`napari_liif.masks`): the mask is honoured as NaN is, and each output
    pixel is masked where its nearest input pixel is.

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
    if preserve_flux not in (False, True, None, "exact", "local"):
        raise ValueError(f"preserve_flux must be False, True (\"exact\") or \"local\", got {preserve_flux!r}")
    if is_masked(image):  # the mask is honoured as NaN is (napari_liif.masks)
        return upscale_masked(upscale, image, scale=scale, size=size, model=model, cell=cell,
                              channel_axis=channel_axis, rgb=rgb, limits=limits, percentiles=percentiles,
                              progress=progress, should_stop=should_stop, preserve_flux=preserve_flux)
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
    zsplit = isotropic.split(scale, size)
    if zsplit is not None:
        if preserve_flux:
            raise ValueError("preserve_flux is not available with a z factor; upscale z without it, or give "
                             "a scale or size of two numbers (y and x) to preserve flux")
        out_hw = output_hw(tuple(spatial), *zsplit[1:])
        out_shape = isotropic.output_shape(a.shape, kind, zsplit[0], out_hw, scale if size is None else size)
        check_allocatable(out_shape, a.dtype, extra_bytes=2 * a.nbytes * out_shape[-3 if kind == "gray" else -4]
                          // max(a.shape[-3 if kind == "gray" else -4], 1))  # the two z passes held at once
        m, maps = get_model(model), intensity_maps(a, kind, limits, percentiles)
        out = _upscale_z(a, kind, maps, zsplit, m, cell, progress, should_stop)
        return out if ch_axis is None else np.moveaxis(out, -1, ch_axis)
    out_hw = output_hw(tuple(spatial), scale, size)
    lead = a.shape[:-3] if kind != "gray" else a.shape[:-2]
    tail = (a.shape[-1],) if kind != "gray" else ()
    # the output, plus one plane of float32 RGB from the renderer and ~3 float64 planes while mapping back
    check_allocatable(lead + out_hw + tail, a.dtype, extra_bytes=(12 + 24) * out_hw[0] * out_hw[1])
    if preserve_flux:
        flux.check_preservable(a, tuple(spatial), out_hw)
    m = get_model(model)
    out = upscale_fitted(a, kind, intensity_maps(a, kind, limits, percentiles), out_hw, m, cell,
                         progress=progress, should_stop=should_stop, preserve_flux=preserve_flux)
    return out if ch_axis is None else np.moveaxis(out, -1, ch_axis)


def upscale_fitted(a: np.ndarray, kind: str, maps: dict, out_hw: tuple[int, int], model, cell: str = "on", *,
                   progress: Progress | None = None, should_stop=None, preserve_flux: bool = False) -> np.ndarray:
    """The planes of a channels-last array ``a`` of ``kind`` (:func:`napari_liif.codec.layout`)
    upscaled to ``out_hw`` with intensity ``maps`` already fitted
    (:func:`napari_liif.codec.intensity_maps`): the work of :func:`upscale` after its checks, for
    callers that share one fit among several calls (the passes of :mod:`napari_liif.isotropic`)."""
    lead = a.shape[:-3] if kind != "gray" else a.shape[:-2]
    tail = (a.shape[-1],) if kind != "gray" else ()
    out = np.empty(lead + tuple(out_hw) + tail, a.dtype)
    planes = list(np.ndindex(*lead)) if lead else [()]
    jobs = [(p, c) for p in planes for c in channel_jobs(kind, a.shape[-1] if tail else 0)]
    per_job = out_hw[0] * out_hw[1]  # progress is counted in output pixels
    total = per_job * len(jobs)
    for k, (p, c) in enumerate(jobs):
        if should_stop is not None and should_stop():
            raise InterruptedError(f"stopped after {k} of {len(jobs)} planes")
        src, dst = job_part(a[p], c), job_part(out[p], c)
        const = constant_value(src, c in ("rgb", "rgba"))
        codec = PlaneCodec(c, maps, constant_value(src[..., 3], False) if c == "rgba" else None)
        if const is not None:
            dst[...] = const  # a constant plane stays exactly constant
        else:
            tick = None if progress is None else (lambda d, n, k=k: progress(k * per_job + per_job * d // n, total))

            def render(u, tick=tick):
                res = model.encode(u).render(shape=out_hw, cell=cell, progress=tick)
                if not np.isfinite(res).all():
                    raise RuntimeError(f"the model {model.name} produced non-finite values (NaN or inf); "
                                       "its weights are broken: use another checkpoint")
                return res

            dst[...] = codec.decode([render(u) for u in codec.encode(src)])
        codec.carry(src, dst)  # NaN, inf, nodata and outliers stay where their pixels are nearest
        if preserve_flux:
            outliers, bounds = codec.flux_limits(src)  # carried values held, the rest within the held range
            correct = keep_local_means if preserve_flux == "local" else flux.preserve_flux
            dst[...] = correct(dst, src, dtype=a.dtype, outliers=outliers, bounds=bounds)
        if progress is not None:
            progress((k + 1) * per_job, total)
    return out


def _upscale_z(a: np.ndarray, kind: str, maps: dict, zsplit, model, cell, progress, should_stop):
    """z, then y and x (:mod:`napari_liif.isotropic`) for a channels-last array, every pass with
    the maps fitted on ``a``; progress in thousandths of the (two or three) passes."""
    passes = iter(range(3))

    def one(arr, scale=None, size=None):
        k = next(passes)
        tick = None if progress is None else (lambda d, n, k=k: progress(k * 1000 + 1000 * d // max(n, 1), 3000))
        spatial = arr.shape[-3:-1] if kind != "gray" else arr.shape[-2:]
        return upscale_fitted(arr, kind, maps, output_hw(tuple(spatial), scale, size), model, cell, progress=tick,
                              should_stop=should_stop)

    out = isotropic.upscale_volume(a, kind, *zsplit, one)
    if progress is not None:
        progress(3000, 3000)
    return out


def _as_array(image) -> np.ndarray:
    try:
        a = np.asarray(image)
    except (ValueError, TypeError) as exc:  # ragged lists and the like
        raise ValueError(f"image must be an array of numbers, got {type(image).__name__} "
                         f"({str(exc).splitlines()[0][:80]})") from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"cannot upscale data of dtype {a.dtype}; expected integer, float or bool data")
    return a
