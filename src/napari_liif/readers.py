"""npe2 reader: the TIFF files and OME-Zarr stores napari-liif writes (and any other calibrated
TIFF or OME-Zarr image) open in napari with their scale, translate and units
(:mod:`napari_liif.calibration`); OME-Zarr pyramids open as multiscale layers. Paths this reader
has nothing to add to (an uncalibrated TIFF, a plain zarr array) are left to napari's own
readers: it returns None for them, as npe2 readers should, and never raises."""

from __future__ import annotations

from pathlib import Path


def napari_get_reader(path):
    """The reader function for ``path``, or None when it is not a calibrated TIFF or an OME-Zarr image."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(str(path))
    try:
        from .zarr_io import is_zarr, read_ome_metadata

        if is_zarr(p):
            return read_ome_zarr if read_ome_metadata(p) else None
        if p.suffix.lower() in (".tif", ".tiff") and p.is_file():
            from .calibration import read_tiff_calibration

            return read_tiff if read_tiff_calibration(p) is not None else None
    except Exception:  # noqa: BLE001 - a file we cannot make sense of is left to other readers
        return None
    return None


def _channel_axis(axes) -> int | None:
    return axes.index("c") if "c" in axes else None


def read_tiff(path) -> list[tuple]:
    """A calibrated TIFF as one image layer (split into channels where it has a channel axis)."""
    from .calibration import napari_kwargs, read_tiff_calibration
    from .io import read_image

    path = str(path[0] if isinstance(path, (list, tuple)) else path)
    data = read_image(path)
    cal = read_tiff_calibration(path)
    rgb = cal is not None and cal.axes[-1] == "s" and data.shape[-1] in (3, 4)
    ch = _channel_axis(cal.axes) if cal is not None else None
    kw = {"name": Path(path).stem, "rgb": rgb, **napari_kwargs(cal, rgb=rgb, channel_axis=ch)}
    if ch is not None:
        kw["channel_axis"] = ch
    return [(data, kw, "image")]


def read_ome_zarr(path) -> list[tuple]:
    """An OME-Zarr image as one (multiscale where it has several levels) image layer."""
    from .calibration import Calibration, napari_kwargs
    from .zarr_io import read_levels, read_ome_metadata

    path = str(path[0] if isinstance(path, (list, tuple)) else path)
    meta = read_ome_metadata(path)
    levels = read_levels(path)
    n = len(meta["axes"])
    cal = Calibration(tuple(meta["scale"] or [1.0] * n), tuple(meta["translation"] or [0.0] * n),
                      tuple(meta["units"] or [None] * n), tuple(meta["axes"]))
    ch = _channel_axis(meta["axes"])
    kw = {"name": Path(path).stem, "multiscale": len(levels) > 1, **napari_kwargs(cal, channel_axis=ch)}
    if ch is not None:
        kw["channel_axis"] = ch
    return [(levels if len(levels) > 1 else levels[0], kw, "image")]


def read_calibration(path):
    """The :class:`~napari_liif.calibration.Calibration` of an image file or zarr store (None for
    formats without one, or none set). Here rather than in ``calibration``, which the writers
    import: reading a store needs ``zarr_io``, which imports ``io``."""
    from .calibration import Calibration, read_tiff_calibration
    from .zarr_io import is_zarr, read_ome_metadata

    path = Path(path)
    try:
        if is_zarr(path):
            meta = read_ome_metadata(path)
            if not meta:
                return None
            n = len(meta["axes"])
            return Calibration(tuple(meta["scale"] or [1.0] * n), tuple(meta["translation"] or [0.0] * n),
                               tuple(meta.get("units") or [None] * n), tuple(meta["axes"]))
        if path.suffix.lower() in (".tif", ".tiff"):
            return read_tiff_calibration(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None
