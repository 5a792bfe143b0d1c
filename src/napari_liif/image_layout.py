"""What an image file holds, decided once from its header: the shape and dtype napari-liif reads it
as, and how. :func:`napari_liif.io.image_info` reports this layout and :func:`napari_liif.io.read_image`
reads by it (and checks the pixels it got against it), so the two agree by construction.

Every image a file holds is read, or the file is refused with one line that names what is not
supported; nothing is silently dropped:

* PNG/JPEG (Pillow): palette images become RGB, or RGBA when the palette has a transparent entry;
  a transparent colour key (PNG ``tRNS`` on gray or RGB) becomes an alpha channel (gray + alpha,
  RGBA); CMYK and YCbCr become RGB. Files with several frames (animated PNG, multi-picture JPEG)
  and pixel modes without a plain array form are refused.
* TIFF (tifffile): one image or one stack of pages of a single shape. A file with several image
  series, or pages of different shapes, is refused with their shapes (reduced-resolution pages,
  pyramid levels and thumbnails of the same image are not separate images). Palette (indexed)
  TIFFs are read through their colour map as RGB: uint8 when every entry is a multiple of 257 (an
  8-bit palette), else uint16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class UnsupportedImage(ValueError):
    """A file whose contents napari-liif cannot read whole (the message: what is unsupported)."""


@dataclass(frozen=True)
class Layout:
    """``shape`` and ``dtype`` of the array a file is read as; ``convert``: the Pillow mode it is
    converted to (None: as stored); ``colormap``: a TIFF palette's (3, N) colour map;
    ``premultiplied``: RGBA stored with associated alpha, read as straight alpha."""

    shape: tuple
    dtype: np.dtype
    convert: str | None = None
    colormap: np.ndarray | None = None
    premultiplied: bool = False


# Pillow mode -> (mode to convert to, trailing axes, dtype); a mode with a transparent colour
# key (info["transparency"]) uses the second entry instead
_PILLOW = {
    "1": ((None, (), np.bool_), None),
    "L": ((None, (), np.uint8), ("LA", (2,), np.uint8)),
    "LA": ((None, (2,), np.uint8), None),
    "P": (("RGB", (3,), np.uint8), ("RGBA", (4,), np.uint8)),
    "PA": (("RGBA", (4,), np.uint8), None),
    "RGB": ((None, (3,), np.uint8), ("RGBA", (4,), np.uint8)),
    "RGBA": ((None, (4,), np.uint8), None),
    "CMYK": (("RGB", (3,), np.uint8), None),
    "YCbCr": (("RGB", (3,), np.uint8), None),
    "I;16": ((None, (), np.uint16), None),
    "I;16B": ((None, (), np.uint16), None),
    "I;16L": ((None, (), np.uint16), None),
    "I": ((None, (), np.int32), None),
    "F": ((None, (), np.float32), None),
}


def pillow_layout(im) -> Layout:
    """The layout of an open Pillow image (module docstring); :class:`UnsupportedImage` otherwise."""
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames > 1:
        kind = "an animated PNG" if im.format == "PNG" else f"a multi-image {im.format}"
        raise UnsupportedImage(f"the file holds {frames} images ({kind}); napari-liif reads files of one "
                               "image: save the frames as a TIFF stack or as separate files")
    entry = _PILLOW.get(im.mode)
    if entry is None:
        raise UnsupportedImage(f"pixel mode {im.mode!r} is not supported; save the image as 8- or 16-bit "
                               "gray, RGB or RGBA, or as TIFF")
    keyed = "transparency" in im.info
    if keyed and entry[1] is None and im.mode not in ("P", "PA", "LA", "RGBA"):
        raise UnsupportedImage(f"a transparent colour key on {im.mode!r} pixels is not supported; "
                               "save the image with an alpha channel")
    convert, tail, dtype = entry[1] if keyed and entry[1] is not None else entry[0]
    w, h = im.size
    return Layout((h, w) + tail, np.dtype(dtype), convert)


def pillow_pixels(im, layout: Layout) -> np.ndarray:
    """The pixels of an open Pillow image read by ``layout``."""
    a = np.asarray(im.convert(layout.convert) if layout.convert else im)
    return a.astype(layout.dtype.newbyteorder("="), copy=False)


def _shapes(items) -> str:
    names = [str(tuple(int(n) for n in shape)) for shape in items]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def tiff_layout(tif) -> Layout:
    """The layout of an open ``tifffile.TiffFile`` (module docstring); :class:`UnsupportedImage`
    for files holding images of several shapes (named)."""
    series = tif.series
    if not series:
        raise UnsupportedImage("the TIFF holds no image")
    if len(series) > 1:
        raise UnsupportedImage(f"the TIFF holds {len(series)} images (series) of shapes "
                               f"{_shapes(s.shape for s in series)}; napari-liif reads one image or one "
                               "stack of equal pages per file: save each image as its own file")
    if len(series[0]) != len(tif.pages):  # pages outside the series: look at each (else: none, and fast)
        _check_pages(tif)
    s = series[0]
    shape, dtype = tuple(int(n) for n in s.shape), np.dtype(s.dtype)
    page = s.pages[0] if s.pages else tif.pages[0]
    if int(page.photometric) != 3:  # not PALETTE
        extra = tuple(int(e) for e in (page.extrasamples or ()))
        premultiplied = (int(page.photometric) == 2 and extra[:1] == (1,) and s.axes.endswith("S")
                         and shape[-1] == 4)  # RGB + associated alpha, samples last
        return Layout(shape, dtype, premultiplied=premultiplied)
    cmap = page.colormap
    if cmap is None or int(page.samplesperpixel) != 1 or dtype.kind != "u":
        raise UnsupportedImage("a palette TIFF with extra samples or without a colour map is not supported; "
                               "save it as RGB")
    cmap = np.asarray(cmap, np.uint16)
    if np.all(cmap % 257 == 0):
        cmap = (cmap // 257).astype(np.uint8)
    return Layout(shape + (3,), cmap.dtype, colormap=cmap)


def _check_pages(tif) -> None:
    """Refuse a TIFF whose pages (other than reduced-resolution copies) have several shapes."""
    pages = [p for p in tif.pages if not int(getattr(p, "subfiletype", 0) or 0) & 1]
    shapes = list(dict.fromkeys((tuple(p.shape), np.dtype(p.dtype).str) for p in pages if p.shape))
    if len(shapes) > 1:
        raise UnsupportedImage(f"the TIFF's pages have {len(shapes)} different shapes "
                               f"({_shapes(s for s, _ in shapes)}); napari-liif reads one image or one stack "
                               "of equal pages per file: save each shape as its own file")


def straight_alpha(a: np.ndarray) -> np.ndarray:
    """RGBA with associated (premultiplied) alpha as straight alpha, the convention of PNG, napari and
    ``upscale``: colour divided by alpha (0 where alpha is 0), rounded and clipped for integers."""
    top = float(np.iinfo(a.dtype).max) if a.dtype.kind in "iu" else 1.0
    rgb, alpha = a[..., :3].astype(np.float64), a[..., 3:].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rgb = np.where(alpha > 0, rgb * (top / alpha), 0.0)
    out = a.copy()
    out[..., :3] = np.clip(np.rint(rgb), 0, top) if a.dtype.kind in "iu" else rgb
    return out


def apply_colormap(indices: np.ndarray, layout: Layout) -> np.ndarray:
    """A palette TIFF's indices as RGB by ``layout.colormap`` (numpy or dask arrays)."""
    lut = np.ascontiguousarray(layout.colormap.T)  # (N, 3)
    return lut[np.clip(indices, 0, len(lut) - 1)]
