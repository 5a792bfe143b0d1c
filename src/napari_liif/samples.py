"""Sample data for napari's File > Open Sample menu, and a TIFF writer that keeps 16-bit and
float data. Nothing here downloads anything or imports Qt.

* ``sample_photo``: scikit-image's "coffee" photograph (400 x 600 RGB, shipped with the
  scikit-image package).
* ``sample_cells``: a synthetic two-channel 16-bit fluorescence image generated in code
  with a fixed seed (same pixels on every machine): point-like nuclei and ring-shaped
  membranes, blurred by a Gaussian point-spread function, on a smooth background, with
  Poisson (shot) noise and a camera offset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CELLS_SHAPE = (256, 256)
CELLS_SEED = 20210101
CAMERA_OFFSET = 100  # counts added by the camera to every pixel
PSF_SIGMA = 1.6  # pixels


def sample_photo():
    """The "coffee" photograph from scikit-image, as napari layer data."""
    from skimage import data

    return [(data.coffee(), {"name": "coffee (scikit-image)", "rgb": True}, "image")]


def _gaussian_psf(sigma: float) -> np.ndarray:
    r = int(np.ceil(4 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


def _convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2D convolution with reflecting borders (scipy), the PSF blur of the microscope."""
    from scipy import ndimage

    return ndimage.convolve(img, kernel, mode="reflect")


def cells_image(shape: tuple[int, int] = CELLS_SHAPE, seed: int = CELLS_SEED) -> np.ndarray:
    """The synthetic cells as a (2, rows, cols) uint16 array: nuclei, then membranes."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    n_cells = max(1, round(h * w / 2200))
    cy, cx = rng.uniform(8, h - 8, n_cells), rng.uniform(8, w - 8, n_cells)
    radius = rng.uniform(7, 13, n_cells)
    nuclei = np.zeros(shape)
    membranes = np.zeros(shape)
    for y, x, r, bright in zip(cy, cx, radius, rng.uniform(0.6, 1.0, n_cells)):
        d = np.hypot(yy - y, xx - x)
        nuclei += bright * (d < 0.45 * r)
        membranes += 0.8 * np.exp(-0.5 * ((d - r) / 0.9) ** 2)
    psf = _gaussian_psf(PSF_SIGMA)
    background = 0.08 + 0.05 * np.sin(yy / h * np.pi) * np.cos(xx / w * np.pi / 2)
    out = []
    for signal, photons in ((nuclei, 1500.0), (membranes, 900.0)):
        expected = photons * (_convolve(signal, psf) + background)
        counts = rng.poisson(np.clip(expected, 0, None)) + CAMERA_OFFSET
        out.append(np.clip(counts, 0, np.iinfo(np.uint16).max).astype(np.uint16))
    return np.stack(out)


def sample_cells():
    """Two-channel 16-bit synthetic fluorescence image (nuclei, membranes) as layer data."""
    img = cells_image()
    meta = {
        "name": ["nuclei (synthetic)", "membranes (synthetic)"],
        "channel_axis": 0,
        "colormap": ["magenta", "green"],
        "blending": "additive",
        "contrast_limits": [[float(c.min()), float(c.max())] for c in img],
    }
    return [(img, meta, "image")]


def write_tiff(path: str, data, meta: dict) -> list[str]:
    """npe2 writer for one image layer: TIFF with the data's own dtype (uint16, float32, ...).

    RGB layers are written as RGB; everything else as gray planes (``minisblack``). The
    layer's scale, translate and units are kept (:mod:`napari_liif.calibration`: ImageJ metadata
    that napari-liif's reader and Fiji read back, where ImageJ can hold the layout and dtype).
    The file is written under a temporary name and renamed into place, so an interrupted save
    never leaves a half-written TIFF. napari asks before replacing the file the user chose;
    when ``.tif`` has to be added to the name, a file of that other name is never replaced.
    """
    import tifffile

    from .calibration import tiff_kwargs
    from .outputs import atomic_file

    path = str(path)
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        path = path + ".tif"
        if os.path.lexists(path):
            raise ValueError(f"{path}: exists; the napari LIIF writer adds .tif to the name you chose and "
                             "never replaces another file: choose a name ending in .tif")
    if Path(path).is_dir():
        raise ValueError(f"{path}: is a folder; choose a file name ending in .tif")
    a = np.asarray(data)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"cannot write layer data of dtype {a.dtype} as TIFF")
    rgb = bool((meta or {}).get("rgb")) and a.ndim >= 3 and a.shape[-1] in (3, 4)
    if a.dtype.kind == "b":
        a = a.astype(np.uint8)
    with atomic_file(path, record=False) as tmp:
        tifffile.imwrite(tmp, a, **tiff_kwargs(a.shape, a.dtype, layer_calibration(meta or {}, a.ndim, rgb), rgb))
    return [path]


def layer_calibration(meta: dict, ndim: int, rgb: bool):
    """The :class:`~napari_liif.calibration.Calibration` of a layer's metadata (``scale``,
    ``translate``, ``units`` of its axes; the colour axis of RGB data uncalibrated), or None when
    the metadata does not describe every axis."""
    from .calibration import Calibration, unit_name

    n = ndim - (1 if rgb else 0)
    scale = [float(v) for v in meta.get("scale") or [1.0] * n]
    translate = [float(v) for v in meta.get("translate") or [0.0] * n]
    units = [unit_name(str(u)) if u is not None else None for u in (meta.get("units") or [None] * n)]
    if not len(scale) == len(translate) == len(units) == n or not all(v > 0 for v in scale):
        return None
    extra = ([1.0], [0.0], [None], ["s"]) if rgb else ([], [], [], [])
    cal = Calibration(tuple(scale + extra[0]), tuple(translate + extra[1]), tuple(units + extra[2]),
                      tuple([None] * n + extra[3]))
    return None if cal.is_identity() else cal
