"""OME metadata as the ecosystem writes it: NGFF ``multiscales`` for OME-Zarr (built and validated
with ``ome-zarr-models``) and OME-XML for ``.ome.tif`` outputs (written by tifffile).

* NGFF 0.4: 2 to 5 axes, at most one ``time`` (t) and one ``channel`` (c), 2 or 3 ``space``
  (z, y, x), ordered t, c, z, y, x; a unit only on time and space axes; each level one ``scale``
  and one ``translation`` with a value per axis. Data whose axes come in another order (an ImageJ
  ``ZCYX`` hyperstack) is transposed into NGFF order (:func:`ngff_order`).
* OME-TIFF: axes as the data has them (``ZCYX`` stays ``ZCYX``), ``PhysicalSize{X,Y,Z}`` with
  their units, channel names kept.
"""

from __future__ import annotations

NGFF_VERSION = "0.4"
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
#: OME-XML's unit symbols for the unit names napari and NGFF use
_OME_UNITS = {"micrometer": "\u00b5m", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm", "meter": "m",
              "angstrom": "\u00c5", "second": "s", "millisecond": "ms", "minute": "min", "hour": "h"}


def ngff_order(axes) -> list[int] | None:
    """The permutation that puts ``axes`` (names among t, c, z, y, x) in NGFF order, or None where
    they cannot be NGFF axes (unknown or repeated names, y or x missing, more than 5)."""
    names = list(axes or ())
    if (not 2 <= len(names) <= 5 or len(set(names)) != len(names) or any(n not in AXIS_TYPES for n in names)
            or "y" not in names or "x" not in names):
        return None
    return sorted(range(len(names)), key=lambda k: "tczyx".index(names[k]))


def multiscales(axes, scale, translation, levels, name: str, units=None) -> list[dict]:
    """The ``multiscales`` attribute of an OME-Zarr image: ``levels`` is ``[(path, scale,
    translation)]`` per level (full resolution first); ``scale``/``translation`` the first
    level's, for the error messages. Validated by ome-zarr-models (a ValueError naming the
    problem otherwise); units are dropped on channel axes."""
    from ome_zarr_models.v04.axes import Axis
    from ome_zarr_models.v04.multiscales import Dataset, Multiscale

    units = list(units) if units is not None else [None] * len(axes)
    ax = [Axis(name=n, type=AXIS_TYPES[n], unit=(u if u and AXIS_TYPES[n] != "channel" else None))
          for n, u in zip(axes, units)]
    try:
        ms = Multiscale(axes=ax, version=NGFF_VERSION, name=name, type="mean",
                        datasets=[Dataset.build(path=p, scale=[float(v) for v in s],
                                                translation=[float(v) for v in t]) for p, s, t in levels])
    except Exception as exc:  # pydantic's ValidationError: one line of ours
        first = str(exc).strip().splitlines()
        raise ValueError(f"axes {list(axes)} with scale {list(scale)} and translation {list(translation)} are not "
                         f"valid OME-NGFF {NGFF_VERSION}: {first[-1] if first else exc}") from None
    return [ms.model_dump(mode="json", exclude_none=True)]


def validate_store(path):
    """An OME-Zarr image store as ome-zarr-models' ``v04.Image`` (its metadata and arrays checked
    against each other; a ValueError naming the problem where it is not valid OME-NGFF)."""
    import zarr
    from ome_zarr_models.v04.image import Image
    from pydantic_zarr.v2 import ArraySpec, GroupSpec

    if not getattr(Image, "__pydantic_complete__", True):  # ome-zarr-models 1.6 under pydantic >= 2.13
        Image.model_rebuild(_types_namespace={"ArraySpec": ArraySpec, "GroupSpec": GroupSpec})
    try:
        return Image.from_zarr(zarr.open_group(str(path), mode="r"))
    except Exception as exc:  # pydantic's ValidationError and zarr's errors: one line of ours
        lines = str(exc).strip().splitlines()
        raise ValueError(f"{path}: not a valid OME-NGFF {NGFF_VERSION} image ({' '.join(lines[:3])})") from None


# -- OME-TIFF ------------------------------------------------------------------------------------
def is_ome_tiff(path) -> bool:
    """True for a name ending in ``.ome.tif`` or ``.ome.tiff``."""
    name = str(path).lower()
    return name.endswith(".ome.tif") or name.endswith(".ome.tiff")


def ome_tiff_kwargs(shape, cal, rgb: bool) -> dict | None:
    """``tifffile.imwrite`` keywords for an OME-TIFF of ``shape`` with the calibration ``cal``
    (axes named; physical sizes and units of z, y, x; channel names), or None where the axes
    cannot be OME's (unnamed or repeated axes)."""
    axes = [a for a in cal.axes] if cal is not None else []
    if len(axes) != len(shape) or any(a is None for a in axes) or len(set(axes)) != len(axes):
        return None
    if not set(axes) <= set("tczyxs") or "y" not in axes or "x" not in axes:
        return None
    meta = {"axes": "".join(axes).upper()}
    for name in "xyz":
        if name in axes and cal.units[axes.index(name)] is not None:
            k = axes.index(name)
            unit = cal.units[k]
            meta[f"PhysicalSize{name.upper()}"] = float(cal.scale[k])
            meta[f"PhysicalSize{name.upper()}Unit"] = _OME_UNITS.get(unit, unit)
    if "t" in axes and cal.units[axes.index("t")] is not None:
        meta["TimeIncrement"] = float(cal.scale[axes.index("t")])
        meta["TimeIncrementUnit"] = _OME_UNITS.get(cal.units[axes.index("t")], cal.units[axes.index("t")])
    names = getattr(cal, "channel_names", None)
    if names and "c" in axes and len(names) == shape[axes.index("c")]:
        meta["Channel"] = {"Name": list(names)}
    return {"ome": True, "photometric": "rgb" if rgb else "minisblack", "metadata": meta}


def read_channel_names(xml: str) -> tuple[str, ...] | None:
    """The channel names of the first image of an OME-XML document (None where it names none)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    names = [ch.get("Name") for ch in pixels if ch.tag.endswith("Channel")]
    return tuple(names) if names and all(names) else None
