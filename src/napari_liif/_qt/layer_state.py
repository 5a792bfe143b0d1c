"""A napari layer and the viewer, translated into the live core's plain descriptions: the
displayed plane (:class:`~napari_liif.live.planes.SourceState`: a thick slice projected as napari
projects it, the layer's world geometry) and the camera, or a one-line message saying why the
layer cannot be shown live.

The slice index is napari's (the dims point mapped into the layer's data, rounded half to even);
a point outside the layer's extent shows nothing, as in napari. With a ``projection_mode`` other
than ``none``, the thick slice's planes (napari's margins, the same rounding) are reduced with the
same function (min, max, mean, sum).
"""

from __future__ import annotations

import math

import numpy as np

from ..live.planes import PROJECTIONS, Options, SourceState
from ..live.viewport import Camera2D, LayerGeometry

def _is_identity(layer) -> bool:
    """True when the layer's transform is scale + translate only (no rotation, shear or affine)."""
    n = layer.ndim
    checks = [np.asarray(layer.rotate, float), np.asarray(layer.affine.affine_matrix, float)[:n, :n],
              np.asarray(layer.affine.affine_matrix, float)[:n, n]]
    return (np.allclose(checks[0], np.eye(n)) and np.allclose(np.asarray(layer.shear, float), 0)
            and np.allclose(checks[1], np.eye(n)) and np.allclose(checks[2], 0))


def range_hint(layer) -> tuple[float, float]:
    """The widest of the layer's contrast limits and their range (used for lazy arrays only)."""
    lims = [float(v) for v in (*layer.contrast_limits_range, *layer.contrast_limits)]
    return min(lims), max(lims)


def is_overlay(layer) -> bool:
    """True for a ``[LIIF]`` overlay layer made by live zoom."""
    return "napari_liif_overlay_of" in (getattr(layer, "metadata", None) or {})


def check_layer(layer) -> str | None:
    """Why live zoom cannot run on ``layer`` at all (None if it can)."""
    from napari.layers import Image, Labels

    if isinstance(layer, Labels):
        return (f"layer {layer.name!r} is a Labels layer: its values are categories, and interpolating "
                "them would invent labels; LIIF zoom works on image layers")
    if not isinstance(layer, Image):
        return f"LIIF zoom works on image layers; {layer.name!r} is a {type(layer).__name__} layer"
    if is_overlay(layer):
        return f"layer {layer.name!r} is a live-zoom overlay; choose the image layer it shows"
    data = layer.data[0] if layer.multiscale else layer.data
    if np.dtype(data.dtype).kind not in "biuf":
        return f"layer {layer.name!r} has data of dtype {data.dtype}; LIIF zoom needs integer, float or bool data"
    return None


def _slab(point: float, left: float, right: float, size: int):
    """napari's thick slice along one axis: a slice, or None when it misses the layer."""
    low_r, high_r = np.round(point - left), np.round(point + right)
    if high_r < 0 or low_r > size - 1:
        return None
    low, high = max(int(low_r), 0), max(int(high_r), 0)
    if np.isclose(high, point + right):
        high += 1
    if low == high:
        high += 1
    return slice(low, min(high, size))


def _coarse_plane(layer, index: tuple, rgb: bool):
    """The plane of the coarsest multiscale level at least 64 pixels on a side (None otherwise)."""
    if not layer.multiscale or len(layer.data) < 2:
        return None
    base = layer.data[0].shape
    n = len(index)
    for level in reversed(layer.data[1:]):
        if min(level.shape[n:n + 2]) >= 64:
            idx = []
            for k, ix in enumerate(index):
                r = level.shape[k] / base[k]
                if isinstance(ix, slice):
                    idx.append(slice(int(ix.start * r), max(int(ix.start * r) + 1, int(math.ceil(ix.stop * r)))))
                else:
                    idx.append(min(int(ix * r), level.shape[k] - 1))
            return level[tuple(idx)]
    return None


def read_source(viewer, layer, options: Options | None = None) -> SourceState | str:
    """The source's displayed plane now, or a one-line reason it cannot be shown live."""
    reason = check_layer(layer)
    if reason:
        return reason
    if viewer.dims.ndisplay != 2:
        return "LIIF zoom works in the 2D view; switch the viewer to 2D to see it"
    if viewer.canvas.grid.enabled:
        return "LIIF zoom does not work in grid mode; turn grid mode off to see it"
    ndim = viewer.dims.ndim
    if list(viewer.dims.displayed) != [ndim - 2, ndim - 1]:
        return ("LIIF zoom needs the last two axes displayed as rows and columns; "
                f"the viewer displays axes {list(viewer.dims.displayed)} of {ndim}")
    if not _is_identity(layer):
        return (f"layer {layer.name!r} is rotated, sheared or has an affine transform; "
                "LIIF zoom supports scale and translate only")
    mode = str(getattr(layer, "projection_mode", "none"))
    if mode != "none" and mode not in PROJECTIONS:
        return f"layer {layer.name!r} uses projection {mode!r}; LIIF zoom shows none, min, max, mean and sum"
    data = layer.data[0] if layer.multiscale else layer.data
    n = layer.ndim
    scale = np.asarray(layer.scale, float)
    translate = np.asarray(layer.translate, float)
    if np.any(scale[-2:] <= 0):
        return f"layer {layer.name!r} has a non-positive scale {tuple(scale[-2:])}; LIIF zoom needs positive scales"
    point = np.asarray(viewer.dims.point, float)[-n:]
    left = np.asarray(viewer.dims.margin_left, float)[-n:] if len(viewer.dims.margin_left) >= n else np.zeros(n)
    right = np.asarray(viewer.dims.margin_right, float)[-n:] if len(viewer.dims.margin_right) >= n else np.zeros(n)
    shape = data.shape[:n]
    index = []
    for a in range(n - 2):
        p = (point[a] - translate[a]) / scale[a]
        if mode == "none":
            k = int(np.round(p))
            if not 0 <= k < shape[a]:
                return f"idle: this slice is outside layer {layer.name!r} (napari shows nothing there)"
            index.append(k)
        else:
            s = _slab(p, left[a] / abs(scale[a]), right[a] / abs(scale[a]), shape[a])
            if s is None:
                return f"idle: this slice is outside layer {layer.name!r} (napari shows nothing there)"
            index.append(s)
    if all(isinstance(i, slice) and i.stop - i.start == 1 for i in index):
        index = [i.start for i in index]  # a slab one plane thick is that plane, as napari shows it
    index = tuple(index)
    geom = LayerGeometry((int(shape[-2]), int(shape[-1])), (float(scale[-2]), float(scale[-1])),
                         (float(translate[-2]), float(translate[-1])))
    rgb = bool(layer.rgb)
    lazy = not isinstance(data, np.ndarray)
    return SourceState(data, index, rgb, geom, range_hint(layer), mode if any(isinstance(i, slice) for i in index)
                       else "none", alpha=rgb and data.shape[-1] == 4, options=options or Options(),
                       coarse=_coarse_plane(layer, index, rgb) if lazy else None,
                       interpolation=str(getattr(layer, "interpolation2d", "nearest")))


def read_camera(viewer, dpr: float = 1.0) -> Camera2D:
    """napari's 2D camera, in physical pixels when ``dpr`` (the device pixel ratio) is not 1."""
    cam = viewer.scene.camera
    h, w = viewer.canvas.size
    return Camera2D(tuple(float(c) for c in cam.center[-2:]), float(cam.zoom), (int(h), int(w))).physical(dpr)
