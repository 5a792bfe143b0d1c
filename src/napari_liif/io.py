"""Reading and writing image files: PNG, JPEG, TIFF (16-bit and float kept) and NPY.

TIFF goes through tifffile, NPY through numpy (never unpickling), PNG and JPEG through
Pillow (writing through imageio), except 16-bit colour PNG (RGB, RGBA, gray + alpha, and keyed
gray): Pillow reads those as 8-bit and cannot write them, so a small PNG codec here keeps their 16
bits. What a file is read as is decided once, from its header (:mod:`napari_liif.image_layout`).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .image_layout import (Layout, UnsupportedImage, apply_colormap, pillow_layout, pillow_pixels, straight_alpha,
                           tiff_layout)
from .ome import is_ome_tiff
from .outputs import DiskFullError, OutputError, atomic_file

READ_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
WRITE_SUFFIXES = READ_SUFFIXES


class ImageIOError(ValueError):
    """A file that cannot be read or written as an image."""


_SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
    "NPY": (b"\x93NUMPY",),
}
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".npy": "NPY"}
_EXTENSION = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "NPY": ".npy"}


def _sniff(head: bytes) -> str | None:
    for fmt, sigs in _SIGNATURES.items():
        if head.startswith(sigs):
            return fmt
    return None


def check_signature(path: str | Path) -> str:
    """The format that ``path``'s name promises, checked against its first bytes; an
    :class:`ImageIOError` ("photo.png: not a PNG file ...") when they disagree."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageIOError(f"{path}: unsupported file type {path.suffix or '(none)'}; "
                           f"expected one of {', '.join(READ_SUFFIXES)}")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise ImageIOError(f"{path}: cannot open ({exc.strerror or type(exc).__name__})") from None
    if not head:
        raise ImageIOError(f"{path}: the file is empty (0 bytes), not {_a(fmt)} file")
    actual = _sniff(head)
    if actual != fmt:
        hint = f" (it looks like {_a(actual)} file; rename it to {_EXTENSION[actual]})" if actual else ""
        raise ImageIOError(f"{path}: not {_a(fmt)} file{hint}")
    return fmt


def _a(fmt: str) -> str:
    return f"an {fmt}" if fmt == "NPY" else f"a {fmt}"


def _check_path(path: Path) -> str:
    if path.is_dir():
        raise ImageIOError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise ImageIOError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    return check_signature(path)


def _npy_header(path: Path) -> tuple[tuple, np.dtype]:
    from numpy.lib import format as npformat

    with open(path, "rb") as f:
        version = npformat.read_magic(f)
        read = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unknown NPY version {version}")
        shape, _, dtype = read(f)
    return shape, dtype


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into a numpy array, keeping its dtype and channels.

    PNG/JPEG give (H, W), (H, W, 2) gray + alpha, (H, W, 3) or (H, W, 4): palette images are
    expanded to RGB, or RGBA when the palette has a transparent entry, and a transparent colour key
    becomes an alpha channel; TIFF and NPY give whatever they hold (a palette TIFF through its
    colour map, as RGB). A file holding images napari-liif cannot read whole (frames of an animated
    PNG, TIFF pages or series of several shapes) is refused with a line that names them
    (:mod:`napari_liif.image_layout`); ``image_info`` reports exactly the shape and dtype read
    here. The file's first bytes must match its name's format. Every failure is an
    :class:`ImageIOError` whose one-line message starts with the path and is ours, not a reader
    library's ("not a PNG file", "corrupt or truncated TIFF file").
    """
    path = Path(path)
    fmt = _check_path(path)
    try:
        if fmt == "NPY":
            _, dtype = _npy_header(path)
            if dtype.hasobject:
                raise ImageIOError(f"{path}: the NPY file holds Python objects, which napari-liif never "
                                   "loads (that would unpickle them); save a numeric array")
            a = np.load(path, allow_pickle=False)
        elif fmt == "TIFF":
            a = _read_tiff(path)
        elif fmt == "PNG" and _png16_header(path) is not None:
            a = _read_png16(path)
        else:
            a = _read_pillow(path)
    except (ImageIOError, MemoryError):
        raise
    except UnsupportedImage as exc:
        raise ImageIOError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a reader's failure on a bad file becomes one line of ours
        if type(exc).__name__ == "DecompressionBombError":  # Pillow's guard against huge images
            raise ImageIOError(f"{path}: the {fmt} image is too large to decode safely; "
                               "save huge images as TIFF") from None
        raise ImageIOError(f"{path}: corrupt or truncated {fmt} file") from None
    a = np.asarray(a)
    if a.size == 0:
        raise ImageIOError(f"{path}: the image is empty (shape {a.shape})")
    return a


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        layout = pillow_layout(im)
        return _as_laid_out(pillow_pixels(im, layout), layout)


def _as_laid_out(a: np.ndarray, layout: Layout) -> np.ndarray:
    """``a``, checked against the layout ``image_info`` reports for its file (they must agree)."""
    if a.shape != layout.shape or a.dtype != layout.dtype:
        raise UnsupportedImage(f"the pixels read ({a.shape}, {a.dtype}) are not the layout its header "
                               f"describes ({layout.shape}, {layout.dtype}); convert the file to TIFF")
    return a


def check_writable(path: str | Path, shape, dtype) -> None:
    """Raise the :class:`ImageIOError` that writing an array of ``shape`` and ``dtype`` to ``path``
    would raise (format, dtype and layout), without any data."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageIOError(f"{path}: unsupported output type {suffix or '(none)'}; expected one of {', '.join(WRITE_SUFFIXES)}")
    if suffix in (".png", ".jpg", ".jpeg"):
        _check_plain_image(path, suffix, np.broadcast_to(np.zeros((), dtype), tuple(shape)))


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        layout = tiff_layout(tif)
        a = tif.asarray(series=0)  # raises on pixel data cut short ("failed to read ... bytes")
    if layout.colormap is not None:
        a = apply_colormap(a, layout)
    if layout.premultiplied:
        a = straight_alpha(np.asarray(a))
    return _as_laid_out(np.asarray(a), layout)


def image_info(path: str | Path) -> tuple[tuple[int, ...], np.dtype] | None:
    """``(shape, dtype)`` of an image file from its header, without reading the pixels
    (the layout ``read_image`` reads it by: :mod:`napari_liif.image_layout`); None if the header
    cannot be read or the file holds what napari-liif does not read (``read_image`` then says why)."""
    path = Path(path)
    try:
        fmt = _check_path(path)
        if fmt == "NPY":
            shape, dtype = _npy_header(path)
            return tuple(int(n) for n in shape), np.dtype(dtype)
        if fmt == "TIFF":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                layout = tiff_layout(tif)
        elif fmt == "PNG" and _png16_header(path) is not None:
            h, w, ch, _ = _png16_header(path)
            return (h, w, ch), np.dtype(np.uint16)
        else:
            from PIL import Image

            with Image.open(path) as im:
                layout = pillow_layout(im)
    except Exception:  # noqa: BLE001 - unreadable headers are reported when the file is read
        return None
    return layout.shape, layout.dtype


def image_axes(path: str | Path) -> str | None:
    """The axes a file declares, as tifffile names them (``"ZCYX"`` for an ImageJ hyperstack or an
    OME-TIFF, ``"YXS"`` for RGB; C is channels), or None for files that declare none (PNG, JPEG,
    NPY, TIFF without ImageJ or OME metadata)."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not (tif.is_imagej or tif.is_ome):
                return None
            return str(tif.series[0].axes).upper()
    except Exception:  # noqa: BLE001 - unreadable headers are reported when the file is read
        return None


def write_image(path: str | Path, data: np.ndarray, *, overwrite: bool = False, record: bool = False,
                calibration=None) -> Path:
    """Write ``data``; TIFF and NPY keep any dtype and shape, PNG takes bool/uint8/uint16
    and JPEG uint8, both as (H, W) or (H, W, C) (C = 2, 3, 4 for PNG; 3 for JPEG).

    A TIFF stores ``calibration`` (a :class:`napari_liif.calibration.Calibration`: pixel size,
    origin, units, z spacing) as ImageJ metadata where ImageJ can hold the layout and dtype,
    else in the resolution tags and tifffile's JSON description; a name ending in ``.ome.tif``
    gets an OME-TIFF (OME-XML: axes, physical sizes with units, channel names); other formats
    ignore it.

    The file is written under a hidden temporary name in the same folder and renamed into
    place, so ``path`` never holds a half-written image. An existing ``path`` is replaced only
    with ``overwrite``; a folder never. ``record`` notes the file as napari-liif's own in the
    folder's log (:mod:`napari_liif.outputs`), which lets a batch skip it when resumed; a
    :class:`napari_liif.outputs.Claim` records what made it and guards the commit against
    another run's. A full disk is a :class:`napari_liif.outputs.DiskFullError`; every other failure is an :class:`ImageIOError` whose message starts with the path.
    """
    path = Path(path)
    data = np.asarray(data)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageIOError(f"{path}: unsupported output type {suffix or '(none)'}; expected one of {', '.join(WRITE_SUFFIXES)}")
    if suffix in (".png", ".jpg", ".jpeg"):
        _check_plain_image(path, suffix, data)
    if path.is_dir():
        raise ImageIOError(f"{path}: is a folder; give a file name")
    if os.path.lexists(path) and not overwrite:
        raise ImageIOError(f"{path}: exists; pass overwrite=True to replace it")
    try:
        with atomic_file(path, record=record) as tmp:
            _encode(tmp, suffix, data, calibration, is_ome_tiff(path))
    except (ImageIOError, DiskFullError, OutputError):  # a full disk, or another run's result: said as is
        raise
    except Exception as exc:  # noqa: BLE001 - every writer failure becomes one clear line
        raise ImageIOError(f"{path}: cannot write {suffix[1:].upper()} ({_reason(exc)})") from None
    return path


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _encode(path: Path, suffix: str, data: np.ndarray, calibration=None, ome: bool = False) -> None:
    if suffix == ".npy":
        if data.dtype.hasobject:
            raise ImageIOError(f"{path}: cannot write Python objects as NPY")
        np.save(path, data, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        from .calibration import ome_tiff_kwargs, tiff_kwargs

        rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
        kw = ome_tiff_kwargs(data.shape, data.dtype, calibration, rgb) if ome else None
        tifffile.imwrite(path, data, **(kw or tiff_kwargs(data.shape, data.dtype, calibration, rgb)))
    elif suffix == ".png" and data.dtype == np.uint16 and data.ndim == 3:
        _write_png16(path, data)
    else:
        import imageio.v3 as iio

        iio.imwrite(path, data, plugin="pillow", extension=suffix)


def _check_plain_image(path: Path, suffix: str, data: np.ndarray) -> None:
    jpeg = suffix in (".jpg", ".jpeg")
    fmt = "JPEG" if jpeg else "PNG"
    allowed = (np.uint8,) if jpeg else (np.bool_, np.uint8, np.uint16)
    if data.dtype not in allowed:
        names = "/".join(np.dtype(d).name for d in allowed)
        raise ImageIOError(f"{path}: {fmt} stores {names}, not {data.dtype}; "
                           "write .tif or .npy to keep this dtype")
    channels = (3,) if jpeg else (2, 3, 4)
    if not (data.ndim == 2 or (data.ndim == 3 and data.shape[-1] in channels)):
        raise ImageIOError(f"{path}: {fmt} stores (H, W) or (H, W, {'|'.join(map(str, channels))}) images, "
                           f"not shape {data.shape}; write .tif or .npy for stacks and other layouts")
    if data.size == 0:
        raise ImageIOError(f"{path}: cannot write an empty image (shape {data.shape})")


# -- 16-bit colour PNG --------------------------------------------------------------------
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


def _png16_header(path: Path) -> tuple[int, int, int, bytes | None] | None:
    """``(rows, cols, channels, tRNS colour key or None)`` of a 16-bit PNG that this codec reads
    (colour, gray + alpha, or gray with a transparent colour key, which becomes an alpha channel),
    from the chunks before the pixels; None for every other file."""
    with open(path, "rb") as f:
        head = f.read(33)
        if not (len(head) == 33 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and head[24] == 16):
            return None
        w, h, _, ctype = struct.unpack(">IIBB", head[16:26])
        if ctype not in _PNG_CHANNELS:
            return None
        key = None
        while True:  # the chunks between IHDR and the first IDAT (tRNS must come before it)
            top = f.read(8)
            if len(top) < 8 or top[4:] in (b"IDAT", b"IEND"):
                break
            n = struct.unpack(">I", top[:4])[0]
            if top[4:] == b"tRNS" and ctype in (0, 2):
                key = f.read(n)
                f.seek(4, 1)
            else:
                f.seek(n + 4, 1)
    if ctype == 0 and key is None:
        return None  # plain 16-bit gray: Pillow reads it whole
    return h, w, _PNG_CHANNELS[ctype] + (key is not None), key


def _read_png16(path: Path) -> np.ndarray:
    """Decode a non-interlaced 16-bit RGB, RGBA, gray + alpha, or keyed gray or RGB PNG to
    uint16 (H, W, C); a transparent colour key becomes an alpha channel (0 where the pixel is
    the key, 65535 elsewhere)."""
    _, _, _, key = _png16_header(path)
    data = path.read_bytes()
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if interlace:
        raise ImageIOError(f"{path}: interlaced 16-bit colour PNG is not supported; "
                           "save it non-interlaced or as 16-bit TIFF")
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            chunks.append(data[pos + 8:pos + 8 + n])
        elif kind == b"IEND":
            break
        pos += 12 + n
    raw = zlib.decompress(b"".join(chunks))
    ch = _PNG_CHANNELS[ctype]
    bpp, stride = 2 * ch, 2 * ch * w
    if len(raw) < h * (stride + 1):
        raise ValueError(f"truncated image data ({len(raw)} of {h * (stride + 1)} bytes)")
    rows = np.frombuffer(raw, np.uint8, h * (stride + 1)).reshape(h, stride + 1)
    out = np.empty((h, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(h):
        kind, line = int(rows[y, 0]), rows[y, 1:]
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum (mod 256) along each byte lane
            cur = np.cumsum(line.reshape(w, bpp), axis=0, dtype=np.uint8).ravel()
        elif kind == 2:  # Up
            cur = line + prev
        elif kind in (3, 4):  # Average, Paeth: each byte depends on the decoded one to its left
            cur = _unfilter_sequential(kind, line, prev, bpp)
        else:
            raise ValueError(f"unknown PNG filter type {kind} in row {y}")
        out[y] = cur
        prev = out[y]
    img = out.view(">u2").reshape(h, w, ch).astype(np.uint16)
    if key is None:
        return img
    if len(key) != 2 * ch:
        raise ValueError(f"a tRNS chunk of {len(key)} bytes for {ch} samples")
    opaque = np.any(img != np.frombuffer(key, ">u2").astype(np.uint16), axis=-1)
    return np.concatenate([img, np.where(opaque, np.uint16(65535), np.uint16(0))[..., None]], axis=-1)


def _unfilter_sequential(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    cur, up = bytearray(line.tobytes()), prev.tobytes()
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if kind == 3:
            pred = (a + b) >> 1
        else:
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
        cur[i] = (cur[i] + pred) & 0xFF
    return np.frombuffer(bytes(cur), np.uint8)


def _write_png16(path: Path, data: np.ndarray) -> None:
    """Encode uint16 (H, W, 2|3|4) as 16-bit PNG (filter Up on every row after the first)."""
    h, w, ch = data.shape
    ctype = {v: k for k, v in _PNG_CHANNELS.items()}[ch]
    rows = np.ascontiguousarray(data, ">u2").reshape(h, -1).view(np.uint8)
    filtered = np.empty((h, rows.shape[1] + 1), np.uint8)
    filtered[:, 0] = 2
    filtered[0, 0] = 0
    filtered[0, 1:] = rows[0]
    filtered[1:, 1:] = rows[1:] - rows[:-1]  # uint8 arithmetic wraps mod 256, as PNG wants

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    path.write_bytes(_PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6))
                     + chunk(b"IEND", b""))
