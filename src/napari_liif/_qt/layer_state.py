"""What live zoom needs to know about a napari layer and the viewer: the displayed 2D slice,
its intensity mapping and its world geometry, or a message saying why it cannot be shown."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..intensity import IntensityMap
from ..viewport import Camera2D, LayerGeometry


@dataclass(frozen=True)
class SourceState:
    """The displayed plane of the source layer.

    ``data`` is the full-resolution array (level 0 of a multiscale layer), ``index`` the
    indices of its non-displayed leading axes, ``rgb`` whether the last axis is colour, and
    ``range_hint`` the intensity range to use when the plane is not an in-memory array.
    """

    data: object
    index: tuple[int, ...]
    rgb: bool
    geometry: LayerGeometry
    range_hint: tuple[float, float]

    def field_key(self, data_version: int) -> tuple:
        lazy = not isinstance(self.data, np.ndarray)
        return (data_version, self.index, self.rgb, self.geometry.shape, self.range_hint if lazy else None)

    def plane(self):
        return self.data[self.index]

    def intensity_map(self) -> IntensityMap:
        """[0, 1] mapping of the plane: uint8 and bool by their dtype range; other in-memory
        planes by their finite data range; lazy arrays (dask, zarr) by ``range_hint`` so that
        nothing reads the whole plane. Reads the plane: call it off the UI thread."""
        dtype = np.dtype(self.data.dtype)
        if dtype == np.uint8 or dtype.kind == "b":
            return IntensityMap.fit(np.empty(0, dtype))
        if isinstance(self.data, np.ndarray):
            plane = self.plane()
            return IntensityMap.fit(plane[..., :3] if self.rgb else plane)
        return IntensityMap.fit(np.empty(0, dtype), *self.range_hint)

    def prepare(self):
        """``(source, shape, to_data)`` for the engine: ``source(y0, y1, x0, x1)`` is a window of the
        plane in [0, 1]; ``to_data`` maps a render (rows, cols, 3) back to float32 data units,
        gray (rows, cols) or RGB (rows, cols, 3)."""
        data, index, rgb = self.data, self.index, self.rgb
        imap = self.intensity_map()
        span, lo = np.float32(imap.span), np.float32(imap.lo)

        def source(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            key = index + (slice(y0, y1), slice(x0, x1)) + ((slice(0, 3),) if rgb else ())
            return imap.forward(np.asarray(data[key]))

        def to_data(u: np.ndarray) -> np.ndarray:
            u = u if rgb else u.mean(-1)
            return (u * span + lo).astype(np.float32, copy=False)

        return source, self.geometry.shape, to_data


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


def check_layer(layer) -> str | None:
    """Why live zoom cannot run on ``layer`` at all (None if it can)."""
    from napari.layers import Image, Labels

    if isinstance(layer, Labels):
        return (f"layer {layer.name!r} is a Labels layer: its values are categories, and interpolating "
                "them would invent labels; LIIF zoom works on image layers")
    if not isinstance(layer, Image):
        return f"LIIF zoom works on image layers; {layer.name!r} is a {type(layer).__name__} layer"
    data = layer.data[0] if layer.multiscale else layer.data
    if np.dtype(data.dtype).kind not in "biuf":
        return f"layer {layer.name!r} has data of dtype {data.dtype}; LIIF zoom needs integer, float or bool data"
    return None


def read_source(viewer, layer) -> SourceState | str:
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
    data = layer.data[0] if layer.multiscale else layer.data
    n = layer.ndim
    scale = np.asarray(layer.scale, float)
    translate = np.asarray(layer.translate, float)
    if np.any(scale[-2:] <= 0):
        return f"layer {layer.name!r} has a non-positive scale {tuple(scale[-2:])}; LIIF zoom needs positive scales"
    point = np.asarray(viewer.dims.point, float)[-n:]
    shape = data.shape[:n]
    index = tuple(int(np.clip(round((point[a] - translate[a]) / scale[a]), 0, shape[a] - 1)) for a in range(n - 2))
    geom = LayerGeometry((int(shape[-2]), int(shape[-1])), (float(scale[-2]), float(scale[-1])),
                         (float(translate[-2]), float(translate[-1])))
    return SourceState(data, index, bool(layer.rgb), geom, range_hint(layer))


def read_camera(viewer) -> Camera2D:
    cam = viewer.scene.camera
    h, w = viewer.canvas.size
    return Camera2D(tuple(float(c) for c in cam.center[-2:]), float(cam.zoom), (int(h), int(w)))
