"""``upscale``: numpy in, numpy out, any dtype and channel layout.

Layout rules
------------
* The last two non-channel axes are spatial (rows, columns); any leading axes (z, t, ...)
  are a stack, upscaled plane by plane.
* ``rgb=None`` guesses as napari does: a last axis of length 3 or 4 is colour. RGB goes
  through the model as colour; an alpha channel goes through it as a gray image.
* ``channel_axis=k`` marks an axis of independent channels (fluorescence): each channel is
  upscaled as a gray image with its own intensity map.
* Gray planes enter the model as R = G = B and leave as the mean of the three outputs.

Intensities are mapped to [0, 1] and back by :class:`~napari_liif.intensity.IntensityMap`.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable

import numpy as np

from .intensity import IntensityMap

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


def output_hw(hw: tuple[int, int], scale=None, size=None) -> tuple[int, int]:
    """Output (rows, cols) for ``scale`` (number or per-axis pair) or ``size`` (rows, cols)."""
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale= or size=")
    if size is not None:
        size = tuple(size) if np.ndim(size) else (size, size)
        if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
            raise ValueError(f"size must be two positive integers (rows, cols), got {size}")
        return int(size[0]), int(size[1])
    pair = tuple(scale) if np.ndim(scale) else (scale, scale)
    if len(pair) != 2:
        raise ValueError(f"scale must be a number or a (rows, cols) pair, got {scale}")
    for s in pair:
        if not (isinstance(s, (int, float, np.number)) and math.isfinite(s) and s > 0):
            raise ValueError(f"scale must be a positive finite number, got {s!r}")
    out = (max(1, round(hw[0] * float(pair[0]))), max(1, round(hw[1] * float(pair[1]))))
    return out


def check_allocatable(shape: tuple[int, ...], dtype, what: str = "output") -> None:
    """Refuse, with a clear message, an allocation larger than the memory available."""
    nbytes = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    avail = _available_memory()
    if avail and nbytes > avail:
        raise MemoryError(f"the {what} of shape {tuple(shape)} ({np.dtype(dtype).name}) needs "
                          f"{nbytes / 2**30:.1f} GiB but only {avail / 2**30:.1f} GiB is available; "
                          "use a smaller scale, or upscale_dask / --dask to write it chunk by chunk")


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


def _layout(a: np.ndarray, rgb, channel_axis):
    """Move channels last; return (array, kind) with kind in gray|rgb|rgba|channels."""
    if channel_axis is not None:
        if rgb:
            raise ValueError("give either rgb=True or channel_axis, not both")
        ax = int(channel_axis)
        if not -a.ndim <= ax < a.ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for data with {a.ndim} dimensions")
        return np.moveaxis(a, ax, -1), "channels"
    if rgb is None:
        rgb = a.ndim >= 3 and a.shape[-1] in (3, 4)
    if rgb:
        if a.ndim < 3 or a.shape[-1] not in (3, 4):
            raise ValueError(f"rgb=True needs a last axis of length 3 or 4, got shape {a.shape}")
        return a, "rgb" if a.shape[-1] == 3 else "rgba"
    return a, "gray"


def upscale(image, *, scale=None, size=None, model=None, cell: str = "on", channel_axis: int | None = None,
            rgb: bool | None = None, progress: Progress | None = None, should_stop=None) -> np.ndarray:
    """Upscale an image with LIIF.

    Parameters
    ----------
    image : array-like
        2D gray, (..., H, W) stacks, (..., H, W, 3|4) RGB(A), or channels at ``channel_axis``;
        uint8, uint16, any integer, bool or float.
    scale : float or (float, float)
        Output/input size ratio (rows, cols); non-integer and anisotropic allowed.
    size : (int, int)
        Output (rows, cols) instead of ``scale``; the grid spans the whole input at pixel
        centres and the cell is (2/rows, 2/cols), as in the official LIIF demo.
    model : LiifModel, path or None
        None uses the bundled default model.
    cell : {"on", "off", "clamp"}
        See :meth:`napari_liif.field.EncodedField.cell`.
    progress : callable(done, total), optional
        Called after each plane.

    Returns
    -------
    numpy.ndarray with the input's dtype and channel layout, spatial axes resized.
    """
    a = np.asarray(image)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"cannot upscale data of dtype {a.dtype}; expected integer, float or bool data")
    a, kind = _layout(a, rgb, channel_axis)
    spatial = a.shape[-3:-1] if kind != "gray" else a.shape[-2:]
    if len(spatial) < 2 or min(spatial) < 1:
        raise ValueError(f"image must have two spatial axes of at least one pixel, got shape {np.shape(image)}")
    out_hw = output_hw(tuple(spatial), scale, size)
    lead = a.shape[:-3] if kind != "gray" else a.shape[:-2]
    tail = (a.shape[-1],) if kind != "gray" else ()
    out_shape = lead + out_hw + tail
    check_allocatable(out_shape, a.dtype)
    check_allocatable(out_hw + (3,), np.float32, "working plane")
    m = get_model(model)
    out = np.empty(out_shape, a.dtype)
    maps = _intensity_maps(a, kind)
    planes = list(np.ndindex(*lead)) if lead else [()]
    jobs = [(p, c) for p in planes for c in _channel_jobs(kind, a.shape[-1] if tail else 0)]
    for k, (p, c) in enumerate(jobs):
        if should_stop is not None and should_stop():
            raise InterruptedError(f"stopped after {k} of {len(jobs)} planes")
        src = a[p]
        imap = maps[c if kind == "channels" else (3 if c == 3 else 0)]
        u = imap.forward(src[..., :3] if c == "rgb" else src[..., c] if isinstance(c, int) else src)
        res = m.encode(u).render(shape=out_hw, cell=cell)
        res = res if c == "rgb" else res.mean(-1)
        if c == "rgb":
            out[p][..., :3] = imap.inverse(res)
        elif isinstance(c, int):
            out[p][..., c] = imap.inverse(res)
        else:
            out[p] = imap.inverse(res)
        if progress is not None:
            progress(k + 1, len(jobs))
    return out


def _channel_jobs(kind: str, n: int):
    if kind == "gray":
        return [None]
    if kind == "channels":
        return list(range(n))
    return ["rgb", 3] if kind == "rgba" else ["rgb"]


def _intensity_maps(a: np.ndarray, kind: str) -> dict:
    if kind == "gray":
        return {0: IntensityMap.fit(a)}
    if kind == "channels":
        return {c: IntensityMap.fit(a[..., c]) for c in range(a.shape[-1])}
    maps = {0: IntensityMap.fit(a[..., :3])}
    if kind == "rgba":
        maps[3] = IntensityMap.fit(a[..., 3])
    return maps
