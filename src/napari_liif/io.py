"""Reading and writing image files: PNG, JPEG, TIFF (16-bit and float kept) and NPY."""

from __future__ import annotations

from pathlib import Path

import numpy as np

READ_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
WRITE_SUFFIXES = READ_SUFFIXES


class ImageIOError(ValueError):
    """A file that cannot be read or written as an image."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into a numpy array, keeping its dtype and channels."""
    path = Path(path)
    suffix = path.suffix.lower()
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
        else:
            import imageio.v3 as iio

            a = iio.imread(path)
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes one clear line
        raise ImageIOError(f"{path}: cannot read as {suffix[1:].upper()} ({type(exc).__name__}: {exc})") from None
    a = np.asarray(a)
    if a.size == 0:
        raise ImageIOError(f"{path}: the image is empty (shape {a.shape})")
    return a


def write_image(path: str | Path, data: np.ndarray) -> Path:
    """Write ``data``; TIFF and NPY keep any dtype, PNG takes uint8/uint16, JPEG uint8."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ImageIOError(f"{path}: unsupported output type {suffix or '(none)'}; expected one of {', '.join(WRITE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, data)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        photometric = "rgb" if data.ndim == 3 and data.shape[-1] in (3, 4) else "minisblack"
        tifffile.imwrite(path, data, photometric=photometric)
    else:
        allowed = (np.uint8,) if suffix in (".jpg", ".jpeg") else (np.uint8, np.uint16)
        if data.dtype not in allowed:
            names = "/".join(np.dtype(d).name for d in allowed)
            raise ImageIOError(f"{path}: {suffix[1:].upper()} stores {names}, not {data.dtype}; "
                               "write .tif or .npy to keep this dtype")
        import imageio.v3 as iio

        iio.imwrite(path, data)
    return path
