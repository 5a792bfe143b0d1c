"""Physical calibration of images: per-axis scale (pixel size), translate (origin) and units, read
from and written to TIFF (ImageJ hyperstack metadata, which napari's reader here and Fiji read
back) and OME-Zarr. No Qt, no napari.

Conventions are napari's: the world coordinate of the *centre* of pixel ``i`` along an axis is
``i * scale + translate``. In ImageJ files the pixel size is the TIFF resolution (pixels per unit)
with the unit and the z ``spacing`` in the ImageJ description, and the origin is ``xorigin``,
``yorigin``, ``zorigin`` in pixels (``origin = -translate / scale``). Every file we write also
carries the exact numbers as JSON (the ``napari_liif`` entry of the ImageJ description, or of the
JSON description tifffile writes for the dtypes and layouts ImageJ cannot hold, whose pixel size
then goes into the resolution tags in centimetres, which Fiji reads too).

An upscaled image keeps its input's calibration with each axis rescaled
(:meth:`Calibration.upscaled`): ``scale * n_in / n_out`` and
``translate + scale * (0.5 * n_in / n_out - 0.5)``, so it overlays its input exactly; axes whose
length did not change (z, t, channels, colour) keep theirs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np

#: unit names as napari (pint) and OME-NGFF write them, from the spellings ImageJ and others use
_UNITS = {"micron": "micrometer", "microns": "micrometer", "um": "micrometer", "\u00b5m": "micrometer",
          "\u03bcm": "micrometer", "\\u00b5m": "micrometer", "micrometer": "micrometer",
          "nm": "nanometer", "nanometer": "nanometer",
          "mm": "millimeter", "millimeter": "millimeter", "cm": "centimeter", "centimeter": "centimeter",
          "m": "meter", "meter": "meter", "angstrom": "angstrom", "s": "second", "sec": "second",
          "second": "second", "ms": "millisecond", "millisecond": "millisecond", "min": "minute",
          "minute": "minute", "h": "hour", "hour": "hour"}
_IMAGEJ_UNIT = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm", "meter": "m",
                "angstrom": "angstrom"}
_PER_CM = {"nanometer": 1e7, "micrometer": 1e4, "millimeter": 10.0, "centimeter": 1.0, "meter": 0.01}
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
KEY = "napari_liif"


def unit_name(text) -> str | None:
    """A unit as napari and OME-NGFF name it ("micron", "um", "µm" -> "micrometer"); None for
    pixels or no unit; other names as they are."""
    if text is None:
        return None
    t = str(text).strip()
    if t.lower() in ("", "pixel", "pixels", "px", "none"):
        return None
    return _UNITS.get(t, _UNITS.get(t.lower(), t))


@dataclass(frozen=True)
class Calibration:
    """Per-axis ``scale``, ``translate``, ``units`` (None: uncalibrated) and ``axes`` names
    (t, c, z, y, x, or s for colour samples; None where unknown); the names of the channels
    where the file gives them (OME-XML)."""

    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[str | None, ...]
    axes: tuple[str | None, ...]
    channel_names: tuple[str, ...] | None = None

    @classmethod
    def identity(cls, ndim: int) -> "Calibration":
        return cls((1.0,) * ndim, (0.0,) * ndim, (None,) * ndim, (None,) * ndim)

    @property
    def ndim(self) -> int:
        return len(self.scale)

    def is_identity(self) -> bool:
        return all(s == 1 for s in self.scale) and all(t == 0 for t in self.translate) and not any(self.units)

    def upscaled(self, in_shape, out_shape) -> "Calibration":
        """The calibration of an upscaled image that overlays this one exactly (module docstring)."""
        if len(in_shape) != self.ndim or len(out_shape) != self.ndim:
            raise ValueError(f"calibration of {self.ndim} axes for shapes {tuple(in_shape)} -> {tuple(out_shape)}")
        scale, translate = [], []
        for s, t, n, m in zip(self.scale, self.translate, in_shape, out_shape):
            r = n / m
            scale.append(s * r)
            translate.append(t + s * (0.5 * r - 0.5))
        return replace(self, scale=tuple(scale), translate=tuple(translate))

    def with_axes(self, axes) -> "Calibration":
        return replace(self, axes=tuple(axes))

    def to_json(self) -> dict:
        d = {"scale": list(self.scale), "translate": list(self.translate), "units": list(self.units),
             "axes": list(self.axes)}
        if self.channel_names:
            d["channels"] = list(self.channel_names)
        return d

    @classmethod
    def from_json(cls, d: dict, ndim: int) -> "Calibration | None":
        try:
            scale = tuple(float(v) for v in d["scale"])
            translate = tuple(float(v) for v in d.get("translate") or [0.0] * len(scale))
            units = tuple(unit_name(u) for u in d.get("units") or [None] * len(scale))
            axes = tuple(d.get("axes") or [None] * len(scale))
            names = tuple(str(n) for n in d["channels"]) if d.get("channels") else None
        except (KeyError, TypeError, ValueError):
            return None
        if not (len(scale) == len(translate) == len(units) == len(axes) == ndim):
            return None
        if not all(math.isfinite(v) and v > 0 for v in scale) or not all(math.isfinite(v) for v in translate):
            return None
        return cls(scale, translate, units, axes, names)


# -- TIFF --------------------------------------------------------------------------------------
def guess_axes(shape, dtype, rgb: bool, known=None) -> tuple[str | None, ...]:
    """Axis names for ``shape``: ``known`` where given; colour ``s`` last for RGB; then x, y, z, t
    from the last unnamed axis backwards (None beyond those)."""
    n = len(shape)
    names = list(known) if known is not None and len(known) == n else [None] * n
    if rgb and names[-1] is None:
        names[-1] = "s"
    todo = [name for name in ("x", "y", "z", "t") if name not in names]
    for k in reversed(range(n)):
        if names[k] is None and todo:
            names[k] = todo.pop(0)
    return tuple(names)


def _imagej_axes(shape, dtype, axes) -> str | None:
    """The ImageJ axes string for this layout, or None where ImageJ cannot hold it."""
    if np.dtype(dtype) not in [np.dtype(d) for d in _IMAGEJ_DTYPES] or any(a is None for a in axes):
        return None
    text = "".join(axes).upper()
    order = "TZCYXS"
    tail = "YXS" if "S" in text else "YX"
    if len(set(text)) != len(text) or any(c not in order for c in text) or not text.endswith(tail):
        return None
    if [c for c in order if c in text] != list(text):
        return None
    if "S" in text and (np.dtype(dtype) != np.uint8 or shape[-1] != 3):
        return None
    return text


def tiff_kwargs(shape, dtype, cal: Calibration | None, rgb: bool) -> dict:
    """Keyword arguments for ``tifffile.imwrite`` that store ``cal`` (ImageJ where it fits)."""
    photometric = "rgb" if rgb else "minisblack"
    if cal is None or cal.ndim != len(shape):
        return {"photometric": photometric}
    axes = guess_axes(shape, dtype, rgb, cal.axes)
    cal = cal.with_axes(axes)
    if "x" not in axes or "y" not in axes:
        return {"photometric": photometric, "metadata": {KEY: cal.to_json()}}
    ix, iy = axes.index("x"), axes.index("y")
    sx, sy = cal.scale[ix], cal.scale[iy]
    unit = cal.units[ix] or cal.units[iy]
    ij = _imagej_axes(shape, dtype, axes)
    if ij is not None:
        meta = {"axes": ij, KEY: json.dumps(cal.to_json(), separators=(",", ":"))}
        if unit is not None:
            meta["unit"] = _IMAGEJ_UNIT.get(unit, unit)
        for name in ("y", "z"):
            other = cal.units[axes.index(name)] if name in axes else None
            if other is not None and other != unit:
                meta[f"{name}unit"] = _IMAGEJ_UNIT.get(other, other)
        if "z" in axes:
            iz = axes.index("z")
            meta["spacing"] = cal.scale[iz]
            meta["zorigin"] = -cal.translate[iz] / cal.scale[iz]
        meta["xorigin"], meta["yorigin"] = -cal.translate[ix] / sx, -cal.translate[iy] / sy
        if "t" in axes:
            meta["finterval"] = cal.scale[axes.index("t")]
        return {"photometric": photometric, "imagej": True, "resolution": (1.0 / sx, 1.0 / sy), "metadata": meta}
    kw = {"photometric": photometric, "metadata": {KEY: cal.to_json()}}
    if unit in _PER_CM:  # Fiji reads centimetres from the resolution tags
        kw["resolution"] = (_PER_CM[unit] / sx, _PER_CM[unit] / sy)
        kw["resolutionunit"] = "CENTIMETER"
    else:
        kw["resolution"] = (1.0 / sx, 1.0 / sy)
        kw["resolutionunit"] = "NONE"
    return kw


def ome_tiff_kwargs(shape, dtype, cal: Calibration | None, rgb: bool) -> dict | None:
    """Keyword arguments for ``tifffile.imwrite`` that write an OME-TIFF (:func:`napari_liif.ome.ome_tiff_kwargs`)
    carrying ``cal``, exactly too: as JSON in the image's Description; None where OME cannot
    name the axes (then :func:`tiff_kwargs`)."""
    from .ome import ome_tiff_kwargs as ome_kwargs

    cal = cal if cal is not None and cal.ndim == len(shape) else Calibration.identity(len(shape))
    cal = cal.with_axes(guess_axes(shape, dtype, rgb, cal.axes))
    kw = ome_kwargs(shape, cal, rgb)
    if kw is not None:
        kw["metadata"]["Description"] = json.dumps({KEY: cal.to_json()}, separators=(",", ":"))
    return kw


def _from_imagej(tif, ndim: int) -> Calibration | None:
    meta = tif.imagej_metadata or {}
    if KEY in meta:
        try:
            cal = Calibration.from_json(json.loads(meta[KEY]), ndim)
        except (TypeError, ValueError):
            cal = None
        if cal is not None:
            return cal
    axes = tuple(c.lower() for c in tif.series[0].axes)
    if len(axes) != ndim or "x" not in axes or "y" not in axes:
        return None
    page = tif.pages[0]
    res = []
    for tag in ("XResolution", "YResolution"):
        t = page.tags.get(tag)
        num, den = t.value if t is not None else (1, 1)
        res.append(den / num if num else 1.0)
    unit = unit_name(meta.get("unit"))
    scale, translate, units = [1.0] * ndim, [0.0] * ndim, [None] * ndim
    for name, size in (("x", res[0]), ("y", res[1]), ("z", meta.get("spacing"))):
        if name in axes and size:
            k = axes.index(name)
            scale[k], units[k] = float(size), unit
            translate[k] = -float(meta.get(f"{name}origin", 0.0)) * float(size)
    if "t" in axes and meta.get("finterval"):
        scale[axes.index("t")] = float(meta["finterval"])
    for name in ("y", "z"):  # ImageJ's own names for units that differ from x's
        if meta.get(f"{name}unit") and name in axes:
            units[axes.index(name)] = unit_name(meta[f"{name}unit"])
    cal = Calibration(tuple(scale), tuple(translate), tuple(units), axes)
    return None if cal.is_identity() else cal


def read_tiff_calibration(path) -> Calibration | None:
    """The calibration of a TIFF file: ours (exact), ImageJ's, OME-TIFF's physical sizes, or the
    resolution tags in cm/inch (as micrometres); None when the file has none."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        ndim = len(series.shape)
        if tif.is_imagej:
            return _from_imagej(tif, ndim)
        if tif.is_shaped and tif.shaped_metadata and isinstance(tif.shaped_metadata[0].get(KEY), dict):
            cal = Calibration.from_json(tif.shaped_metadata[0][KEY], ndim)
            if cal is not None:
                return cal
        if tif.is_ome and tif.ome_metadata:
            cal = _from_ome_xml(tif.ome_metadata, tuple(c.lower() for c in series.axes), ndim)
            if cal is not None:
                return cal
        return _from_resolution(tif.pages[0], tuple(c.lower() for c in series.axes))


def _from_ome_xml(xml: str, axes, ndim: int) -> Calibration | None:
    """An OME-TIFF's calibration: ours exactly (the JSON in the image's Description, which OME
    readers show as text), else the physical sizes and units of x, y, z and the channel names."""
    import xml.etree.ElementTree as ET

    from .ome import read_channel_names

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    desc = next((el.text for el in root.iter() if el.tag.endswith("Description") and el.text), None)
    if desc and desc.lstrip().startswith("{"):
        try:
            ours = json.loads(desc).get(KEY)
        except (ValueError, AttributeError):
            ours = None
        cal = Calibration.from_json(ours, ndim) if isinstance(ours, dict) else None
        if cal is not None:
            return cal
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    scale, units = [1.0] * len(axes), [None] * len(axes)
    for name in "xyz":
        size = pixels.get(f"PhysicalSize{name.upper()}")
        if size is not None and name in axes:
            k = axes.index(name)
            scale[k] = float(size)
            units[k] = unit_name(pixels.get(f"PhysicalSize{name.upper()}Unit", "\u00b5m"))
    names = read_channel_names(xml) if "c" in axes else None
    cal = Calibration(tuple(scale), (0.0,) * len(axes), tuple(units), tuple(axes), names)
    return None if cal.is_identity() and not names else cal


def _from_resolution(page, axes) -> Calibration | None:
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    per = {2: 25400.0, 3: 10000.0}.get(int(unit_tag.value) if unit_tag is not None else 2)
    if per is None or "XResolution" not in tags or "x" not in axes or "y" not in axes:
        return None
    sizes = []
    for tag in ("XResolution", "YResolution"):
        num, den = tags[tag].value
        sizes.append(per * den / num if num else 0.0)
    if not all(s > 0 for s in sizes) or sizes == [per, per]:  # 1 pixel per inch/cm: the writers' default
        return None
    scale, units = [1.0] * len(axes), [None] * len(axes)
    for name, size in zip("xy", sizes):
        k = axes.index(name)
        scale[k], units[k] = size, "micrometer"
    return Calibration(tuple(scale), (0.0,) * len(axes), tuple(units), tuple(axes))


def napari_kwargs(cal: Calibration | None, rgb: bool = False, channel_axis: int | None = None) -> dict:
    """``scale``, ``translate`` (and ``units`` where known) for napari's ``add_image`` /
    layer data: the colour axis of RGB and a ``channel_axis`` are left out, as napari wants."""
    if cal is None:
        return {}
    keep = [k for k in range(cal.ndim) if not (rgb and k == cal.ndim - 1) and k != channel_axis]
    kw = {"scale": [cal.scale[k] for k in keep], "translate": [cal.translate[k] for k in keep]}
    units = [cal.units[k] for k in keep]
    if any(units):
        kw["units"] = [u or "pixel" for u in units]
    return kw
