"""Which bundled model suits a piece of data, and why: the widgets', ``view``'s and ``attach``'s
automatic choice (the command line and ``upscale()`` keep ``default``; the command line prints a
hint instead).

Photographs (RGB/RGBA layers) get the photo models, everything single-channel (grayscale, 16-bit,
float, each channel of a stack opened with ``channel_axis``) the microscopy model; a bool layer is a
mask, not a camera image, and gets the photo model. Batch upscaling takes the best model for the
data; live zoom the fastest bundled model of that data whose held-out gain is within
``MARGIN_DB`` of the best one's at every scale both were measured at. The figures are the table in
:mod:`napari_liif.bundled`; nothing here loads a model or imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundled import BUNDLED, DEFAULT, Bundled, names

#: how far (dB, at any measured scale) live zoom's model may fall short of the best one for the data
MARGIN_DB = 0.15
#: the best model for each kind of data (``Bundled.data``): what batch upscaling uses
BEST = {"photo": DEFAULT, "microscopy": "microscopy"}
USES = ("upscale", "live")


@dataclass(frozen=True)
class Choice:
    """A model (a bundled name, or a file) and the one-line reason it was taken."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def describe(*, rgb: bool, dtype, channels: int | None = None) -> tuple[str, str]:
    """``(kind of data, words for it)``: ``("photo", "RGB uint8 layer")``, ``("microscopy",
    "single-channel uint16 layer")``; ``channels`` is 3 or 4 for RGB/RGBA."""
    dtype = np.dtype(dtype)
    if rgb:
        return "photo", f"{'RGBA' if channels == 4 else 'RGB'} {dtype.name} layer"
    if dtype.kind == "b":
        return "photo", "bool layer (a mask, not a camera image)"
    return "microscopy", f"single-channel {dtype.name} layer"


def shortfall(model: Bundled, best: Bundled) -> float | None:
    """The most dB by which ``model``'s held-out gain falls below ``best``'s at any scale ``best``
    was measured at; None if ``model`` lacks one of those scales (not comparable)."""
    gains = dict(model.gains)
    if any(s not in gains for s, _ in best.gains):
        return None
    return round(max(g - gains[s] for s, g in best.gains), 2)


def pick(kind: str, use: str, table: dict[str, Bundled] | None = None,
         available=None) -> tuple[str, str]:
    """``(name, why)`` for data of ``kind`` (``"photo"``/``"microscopy"``) and ``use``
    (``"upscale"``: the best model; ``"live"``: the fastest within ``MARGIN_DB`` of it).
    ``available``: the installed names (default :func:`napari_liif.bundled.names`)."""
    if use not in USES:
        raise ValueError(f"use must be one of {', '.join(USES)}, got {use!r}")
    table = BUNDLED if table is None else table
    available = set(names() if available is None else available)
    best = BEST[kind]
    if best not in available:
        return DEFAULT, f"the {best} model is not installed"
    if use == "upscale":
        return best, ""
    faster = sorted((m for m in table.values() if m.data == kind and m.name in available
                     and m.decoder_macs < table[best].decoder_macs), key=lambda m: m.decoder_macs)
    refused = []
    for m in faster:
        gap = shortfall(m, table[best])
        if gap is None:
            refused.append(f"{m.name} is not measured at every scale {best} is")
        elif gap <= MARGIN_DB:
            return m.name, (f"{gap:.2f} dB below {best} (within {MARGIN_DB}) with "
                            f"{m.decoder_macs:,} decoder MACs per pixel to its {table[best].decoder_macs:,}")
        else:
            refused.append(f"{m.name} is {gap:.2f} dB below {best} (needs ≤ {MARGIN_DB})")
    return best, "; ".join(refused)


def choose_model(*, rgb: bool, dtype, use: str = "upscale", channels: int | None = None,
                 table: dict[str, Bundled] | None = None, available=None) -> Choice:
    """The bundled model for data described by napari's ``rgb`` flag, its ``dtype`` (and for RGB
    the number of ``channels``), for ``use``; see :func:`pick` for ``table`` and ``available``.

    >>> str(choose_model(rgb=False, dtype="uint16"))
    'microscopy: single-channel uint16 layer'
    """
    kind, words = describe(rgb=rgb, dtype=dtype, channels=channels)
    name, why = pick(kind, use, table, available)
    return Choice(name, f"{words}; {why}" if why else words)


def choose_for_layer(layer, use: str = "upscale", **kw) -> Choice:
    """:func:`choose_model` for a napari image layer (read through ``rgb``, ``dtype`` and
    ``data.shape`` only); for None (or anything without a dtype), the photo model."""
    if getattr(layer, "dtype", None) is None:
        name, why = pick("photo", use, **kw)
        return Choice(name, "no layer to judge by" + (f"; {why}" if why else ""))
    rgb = bool(getattr(layer, "rgb", False))
    channels = int(layer.data.shape[-1]) if rgb else None
    return choose_model(rgb=rgb, dtype=layer.dtype, use=use, channels=channels, **kw)


def choose_for_files(files, use: str = "upscale", **kw) -> Choice:
    """:func:`choose_model` for image files, ``(shape, dtype, channel_axis)`` each as read from
    their headers (a file with a channel axis, or not ending in 3 or 4 samples, is single-channel
    data); files of both kinds get the photo model, as on the command line."""
    kinds: dict[str, list[str]] = {}
    for shape, dtype, channel_axis in files:
        rgb = channel_axis is None and len(shape) >= 3 and shape[-1] in (3, 4)
        kind, words = describe(rgb=rgb, dtype=dtype, channels=shape[-1] if rgb else None)
        kinds.setdefault(kind, []).append(words.replace(" layer", ""))
    if not kinds:
        name, why = pick("photo", use, **kw)
        return Choice(name, "no readable file to judge by" + (f"; {why}" if why else ""))
    if len(kinds) > 1:
        name, _ = pick("photo", use, **kw)
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(kinds.items()))
        return Choice(name, f"files of both kinds ({counts}): the photo model, as on the command line")
    (kind, words), = kinds.items()
    name, why = pick(kind, use, **kw)
    n = len(words)
    what = f"{n} files: " + ", ".join(sorted(set(words))) if n > 1 else words[0] + " file"
    return Choice(name, f"{what}; {why}" if why else what)


def choose_for_jobs(jobs, use: str = "upscale", **kw) -> Choice:
    """:func:`choose_for_files` for planned batch jobs (:func:`napari_liif.batch.plan`): the files
    to be written, from their headers (files whose header cannot be read are left out)."""
    from .io import image_info

    facts = []
    for job in jobs:
        info = image_info(job.src) if job.action == "write" else None
        if info is not None:
            facts.append((info[0], info[1], job.channel_axis))
    return choose_for_files(facts, use, **kw)
