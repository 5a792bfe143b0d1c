"""Rebuild the training and validation photographs from sources installable here.

Sources (no network other than the Debian archive; nothing is downloaded at run time
by the plugin itself):

* Debian packages ``plasma-workspace-wallpapers`` and ``mate-backgrounds``, fetched with
  ``apt-get download`` and unpacked with ``dpkg -x`` into a cache folder (no system install).
* The sample photographs bundled with scikit-image.

Synthetic-looking wallpapers (flat gradients, vector art) are dropped by a simple
texture test: photographs have detail at fine scales, gradients do not.
A fixed, name-sorted subset is held out for validation.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

DEBIAN_PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds")
SKIMAGE_PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field",
    "immunohistochemistry", "brick", "grass", "gravel", "retina", "moon", "coins",
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
MAX_SIDE = 1024  # photos are box-downsampled to at most this side: cleaner and faster to train on


def fetch_debian_images(cache: Path) -> list[tuple[str, Path]]:
    """Download and unpack the wallpaper packages into ``cache``; return ``(name, path)`` pairs.

    Plasma ships each wallpaper at several resolutions (plus a preview screenshot and
    sometimes a dark variant): only the largest light image of each is kept.
    """
    unpacked = cache / "debs"
    if not unpacked.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", *DEBIAN_PACKAGES], cwd=tmp, check=True)
            for deb in Path(tmp).glob("*.deb"):
                subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], check=True)
    found: dict[str, Path] = {}
    for p in sorted(unpacked.rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.parent.name == "images" and p.parent.parent.name == "contents":
            name = "plasma-" + p.parent.parent.parent.name
            if name not in found or p.stat().st_size > found[name].stat().st_size:
                found[name] = p
        elif "backgrounds" in p.parts:  # mate: some come at several sizes, "Name_3840x2160"
            name = f"{p.parent.name}-{re.sub(r'_[0-9]+x[0-9]+$', '', p.stem)}"
            if name not in found or p.stat().st_size > found[name].stat().st_size:
                found[name] = p
    return sorted(found.items())


def _high_frequency_energy(img: np.ndarray) -> float:
    """Mean absolute Laplacian of the gray image in [0, 1]: low for flat vector art."""
    g = img.mean(axis=2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.abs(lap).mean())


def _shrink(img: np.ndarray) -> np.ndarray:
    """Integer box-downsample so the longer side is at most MAX_SIDE (removes JPEG noise)."""
    f = int(np.ceil(max(img.shape[:2]) / MAX_SIDE))
    if f <= 1:
        return img
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))


def _as_rgb_float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] < 3:  # gray + alpha
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    scale = 255.0 if img.dtype == np.uint8 else float(np.iinfo(img.dtype).max) if img.dtype.kind in "ui" else 1.0
    return img.astype(np.float32) / scale


DATASET_MARKER = ".napari-liif-dataset"


def claim_dataset_folder(out: Path) -> None:
    """Make ``out`` a dataset folder of ours, whose train/ and val/ ``build_dataset`` replaces;
    refuse one holding a non-empty train/ or val/ that this function did not claim."""
    from ..outputs import OutputError, check_folder_writable

    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file; give a folder for train/ and val/")
    if not (out / DATASET_MARKER).is_file():
        taken = [out / d for d in ("train", "val") if (out / d).exists() and any((out / d).iterdir())]
        if taken:
            raise OutputError(f"{taken[0]}: is not empty and was not made by napari-liif data (which replaces it); "
                              "choose another folder")
    check_folder_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DATASET_MARKER).write_text("train/ and val/ here are rebuilt by napari-liif data\n")


def build_dataset(out: str | Path, cache: str | Path | None = None, n_val: int = 6,
                  min_energy: float = 0.004) -> dict[str, int]:
    """Write ``out/train/*.png`` and ``out/val/*.png``; return the counts.

    Every ``n_val``-th accepted image (by a hash of its name, so the split is stable when
    sources change) goes to validation.
    """
    from skimage import data as skdata
    from skimage import io as skio

    out = Path(out)
    claim_dataset_folder(out)  # before anything is fetched or replaced
    cache = Path(cache) if cache else out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    sources: list[tuple[str, np.ndarray | Path]] = list(fetch_debian_images(cache))
    sources += [(f"skimage-{n}", getattr(skdata, n)()) for n in SKIMAGE_PHOTOS if hasattr(skdata, n)]
    counts = {"train": 0, "val": 0, "rejected": 0}
    for split in ("train", "val"):
        shutil.rmtree(out / split, ignore_errors=True)
        (out / split).mkdir(parents=True)
    seen: set[str] = set()
    for name, src in sources:
        try:
            img = _as_rgb_float(skio.imread(src) if isinstance(src, Path) else src)
        except (OSError, ValueError) as exc:
            print(f"skip {name}: {exc}")
            continue
        img = _shrink(img)
        key = hashlib.sha1(np.ascontiguousarray(img[::16, ::16]).tobytes()).hexdigest()
        if key in seen or min(img.shape[:2]) < 128 or _high_frequency_energy(img) < min_energy:
            counts["rejected"] += 1
            continue
        seen.add(key)
        split = "val" if int(hashlib.md5(name.encode()).hexdigest(), 16) % n_val == 0 else "train"
        skio.imsave(out / split / f"{name}.png", (img * 255 + 0.5).astype(np.uint8), check_contrast=False)
        counts[split] += 1
    return counts
