"""Checks of what callers hand the engine, each a ``ValueError``/``TypeError`` naming the value.

Kept apart from the engine so that the rules are in one place and tested on their own:
:func:`check_region` and :func:`check_shape` for ``EncodedField.render(region, shape)``,
:func:`check_unit_image` for ``LiifModel.encode(image)``, and :func:`check_spec_sizes` for a
checkpoint's spec against its tensors (:func:`precheck_checkpoint` reads a ``.safetensors``
header for it without importing torch, so the command line refuses an absurd file at once).
Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import numbers
import struct
from pathlib import Path

import numpy as np

#: how far outside [0, 1] encode() accepts values (float rounding of a [0, 1] mapping)
UNIT_TOLERANCE = 1e-3


def _real(v, what: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise ValueError(f"{what} must be a real number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return f


def check_region(region, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """``region`` as ``(top, left, bottom, right)`` floats, or a ValueError naming it.

    ``region`` is in input pixel-edge units (the whole image of ``shape`` = (H, W) is
    ``(0, 0, H, W)``); None means the whole image. It must be four finite real numbers with
    bottom > top and right > left, and overlap the image (it may reach past its edges, as
    live-zoom tiles at the border do).
    """
    h, w = int(shape[0]), int(shape[1])
    if region is None:
        return 0.0, 0.0, float(h), float(w)
    if isinstance(region, (str, bytes)) or not hasattr(region, "__len__") or len(region) != 4:
        raise ValueError(f"region must be (top, left, bottom, right), four numbers, got {region!r}")
    top, left, bottom, right = (_real(v, "region value") for v in region)
    if not (bottom > top and right > left):
        raise ValueError(f"region must be (top, left, bottom, right) with bottom > top and right > left, "
                         f"got {tuple(region)!r}")
    if bottom <= 0 or top >= h or right <= 0 or left >= w:
        raise ValueError(f"region {tuple(region)!r} lies outside the image, which spans (0, 0, {h}, {w}) "
                         "in pixel-edge units")
    return top, left, bottom, right


def check_shape(shape, default: tuple[int, int]) -> tuple[int, int]:
    """``shape`` as (rows, cols) of positive integers (None: ``default``), or a ValueError."""
    if shape is None:
        return int(default[0]), int(default[1])
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2:
        raise ValueError(f"shape must be (rows, cols) of positive integers, got {shape!r}")
    out = []
    for v in shape:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or int(v) < 1:
            raise ValueError(f"shape must be (rows, cols) of positive integers, got {shape!r}")
        out.append(int(v))
    return out[0], out[1]


def check_unit_image(a) -> np.ndarray:
    """``a`` as a real array whose values are all finite and in [0, 1] (within
    ``UNIT_TOLERANCE``), or an error that says what was found and what to do.

    ``encode`` takes intensities already mapped to [0, 1]: uint8 data in 0..255 would render
    as a white image, so it is refused here rather than silently clipped.
    """
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"encode expects real intensities in [0, 1], got dtype {a.dtype}; "
                        "napari_liif.upscale maps integer, bool and float data of any range")
    if a.size == 0 or a.dtype.kind == "b":
        return a
    lo, hi = np.min(a), np.max(a)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("encode expects finite intensities in [0, 1], got NaN or inf; "
                         "napari_liif.upscale handles NaN, inf and nodata")
    if lo < -UNIT_TOLERANCE or hi > 1 + UNIT_TOLERANCE:
        hint = " (uint8 data: divide by 255)" if a.dtype == np.uint8 or (a.dtype.kind in "iu" and hi <= 255) else ""
        raise ValueError(f"encode expects intensities in [0, 1], got values from {lo} to {hi} ({a.dtype}){hint}; "
                         "napari_liif.upscale maps any range")
    return a


# -- checkpoint specs ------------------------------------------------------------------------------
def _walk(value, key: str, depth: int = 0):
    """(dotted key, value) of every leaf of a spec's args."""
    if depth > 12:
        raise ValueError(f"{key}: nested more than 12 levels deep")
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{key}.{k}", depth + 1)
    elif isinstance(value, (list, tuple)):
        yield key, value
        for i, v in enumerate(value[:256]):
            yield from _walk(v, f"{key}[{i}]", depth + 1)
    else:
        yield key, value


def check_spec_sizes(spec: dict, shapes: dict[str, tuple], n_tensors: int | None = None) -> None:
    """Refuse a spec whose numbers cannot be layer sizes or counts for tensors of these ``shapes``
    (name -> shape), before anything is allocated: every layer width of a model is some tensor's
    dimension and every layer count at most its number of tensors, so any integer above
    ``max(256, 2 x the largest tensor dimension, 2 x the number of tensors)`` is absurd, and so are
    negative integers and lists (of layers) longer than ``max(16, the number of tensors)``.
    A ValueError names the key and the size."""
    n = len(shapes) if n_tensors is None else n_tensors
    biggest = max((int(d) for shape in shapes.values() for d in shape), default=0)
    cap, list_cap = max(256, 2 * biggest, 2 * n), max(16, n)
    if not isinstance(spec, dict):
        raise ValueError(f"the spec is not a model spec (a {type(spec).__name__})")
    try:
        leaves = list(_walk(spec.get("args"), "args"))
    except ValueError as exc:
        raise ValueError(f"the spec is not a model spec ({exc})") from None
    for key, v in leaves:
        if isinstance(v, (list, tuple)) and len(v) > list_cap:
            raise ValueError(f"the spec asks for {len(v)} entries in {key}, an absurd size for these weights "
                             f"({n} tensors); refused before allocating anything")
        if isinstance(v, bool) or not isinstance(v, int):
            continue
        if v < 0 or v > cap:
            raise ValueError(f"the spec asks for {key}={v}, an absurd layer size for these weights (largest "
                             f"tensor dimension {biggest}, {n} tensors; at most {cap}); refused before "
                             "allocating anything")


def precheck_checkpoint(path) -> None:
    """For a ``.safetensors`` file, :func:`check_spec_sizes` from its header alone (no torch, no
    tensor read): a ValueError naming the file. Files that cannot be pre-checked (other formats,
    unreadable headers) pass: loading them says what is wrong."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > 100 * 2**20:
                return
            header = json.loads(f.read(n))
        spec = json.loads(header["__metadata__"]["spec"])
        shapes = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (OSError, struct.error, ValueError, KeyError, TypeError, AttributeError):
        return
    if isinstance(spec, dict) and isinstance(spec.get("args"), dict):
        try:
            check_spec_sizes(spec, shapes)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

