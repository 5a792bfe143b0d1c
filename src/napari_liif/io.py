"""Reading and writing image files: PNG, JPEG, TIFF (16-bit and float kept) and NPY.

TIFF goes through tifffile, NPY through numpy (never unpickling), PNG and JPEG through
imageio/Pillow, except 16-bit colour PNG (RGB, RGBA, gray + alpha): Pillow reads those as
8-bit and cannot write them, so a small PNG codec here keeps their 16 bits.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

READ_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
WRITE_SUFFIXES = READ_SUFFIXES


class ImageIOError(ValueError):
    """A file that cannot be read or written as an image."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into a numpy array, keeping its dtype and channels.

    PNG/JPEG give (H, W), (H, W, 2) gray + alpha, (H, W, 3) or (H, W, 4) (palette images
    are expanded to RGB(A)); TIFF and NPY give whatever they hold. Every failure is an
    :class:`ImageIOError` whose message starts with the path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise ImageIOError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise ImageIOError(f"{path}: no such file")
    if suffix not in READ_SUFFIXES:
        raise ImageIOError(f"{path}: unsupported file type {suffix or '(none)'}; expected one of {', '.join(READ_SUFFIXES)}")
    try:
        if suffix == ".npy":
            a = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            a = tifffile.imread(path)
        elif suffix == ".png" and _is_png16_colour(path):
            a = _read_png16(path)
        else:
            import imageio.v3 as iio

            a = iio.imread(path, plugin="pillow")
    except ImageIOError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes one clear line
        raise ImageIOError(f"{path}: cannot read as {suffix[1:].upper()} ({_reason(exc)})") from None
    a = np.asarray(a)
    if a.size == 0:
        raise ImageIOError(f"{path}: the image is empty (shape {a.shape})")
    return a


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def write_image(path: str | Path, data: np.ndarray) -> Path:
    """Write ``data``; TIFF and NPY keep any dtype and shape, PNG takes bool/uint8/uint16
    and JPEG uint8, both as (H, W) or (H, W, C) (C = 2, 3, 4 for PNG; 3 for JPEG).

    Every failure is an :class:`ImageIOError` whose message starts with the path.
    """
    path = Path(path)
    data = np.asarray(data)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageIOError(f"{path}: unsupported output type {suffix or '(none)'}; expected one of {', '.join(WRITE_SUFFIXES)}")
    if suffix in (".png", ".jpg", ".jpeg"):
        _check_plain_image(path, suffix, data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            np.save(path, data, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            photometric = "rgb" if data.ndim == 3 and data.shape[-1] in (3, 4) else "minisblack"
            tifffile.imwrite(path, data, photometric=photometric)
        elif suffix == ".png" and data.dtype == np.uint16 and data.ndim == 3:
            _write_png16(path, data)
        else:
            import imageio.v3 as iio

            iio.imwrite(path, data, plugin="pillow", extension=suffix)
    except Exception as exc:  # noqa: BLE001 - every writer failure becomes one clear line
        raise ImageIOError(f"{path}: cannot write {suffix[1:].upper()} ({_reason(exc)})") from None
    return path


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


def _is_png16_colour(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(29)
    return (len(head) == 29 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR"
            and head[24] == 16 and head[25] in (2, 4, 6))


def _read_png16(path: Path) -> np.ndarray:
    """Decode a non-interlaced 16-bit RGB, RGBA or gray + alpha PNG to uint16 (H, W, C)."""
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
    return out.view(">u2").reshape(h, w, ch).astype(np.uint16)


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
