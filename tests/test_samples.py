"""Sample data (a photograph, synthetic 16-bit cells) and the TIFF writer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_liif import samples


def test_photo_is_scikit_image_coffee():
    from skimage import data

    [(img, meta, kind)] = samples.sample_photo()
    assert kind == "image" and meta["name"].startswith("coffee") and meta["rgb"] is True
    assert img.dtype == np.uint8 and img.shape == (400, 600, 3)
    assert np.array_equal(img, data.coffee())


def test_cells_are_deterministic_16bit_two_channel_fluorescence():
    [(img, meta, kind)] = samples.sample_cells()
    assert kind == "image" and meta["channel_axis"] == 0 and len(meta["name"]) == 2
    assert img.dtype == np.uint16 and img.shape == (2, 256, 256)
    assert np.array_equal(img, samples.cells_image())  # same pixels every call
    for ch in img:
        assert ch.min() >= samples.CAMERA_OFFSET  # a camera offset, as real sensors have
        background = np.percentile(ch, 20)
        assert 150 < background < 400  # ~0.1 x photons + offset
        assert ch.max() > 4 * background  # bright objects on a dim background
    nuclei, membranes = img.astype(float)
    # nuclei are compact: most pixels are background; membranes are rings around them
    assert np.mean(nuclei > 2 * np.percentile(nuclei, 20)) < 0.2
    assert np.corrcoef(nuclei.ravel(), membranes.ravel())[0, 1] < 0.5
    # Poisson noise: neighbouring background pixels differ
    assert np.std(np.diff(nuclei[:40, :40], axis=1)) > 5
    assert meta["contrast_limits"][0] == [float(img[0].min()), float(img[0].max())]


def test_other_seed_other_cells():
    a = samples.cells_image((64, 80), seed=1)
    b = samples.cells_image((64, 80), seed=2)
    assert a.shape == (2, 64, 80) and not np.array_equal(a, b)


def test_samples_module_imports_no_qt():
    code = ("import sys, napari_liif.samples as s; s.sample_cells(); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PySide6', 'PyQt5', 'PyQt6', 'napari')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64, np.int32])
def test_write_tiff_keeps_dtype_and_values(tmp_path, dtype):
    import tifffile

    rng = np.random.default_rng(0)
    data = (rng.random((3, 7, 9)) * 50000).astype(dtype)
    [path] = samples.write_tiff(str(tmp_path / "x.tif"), data, {"scale": [1, 0.5, 0.25]})
    back = tifffile.imread(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, data)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        x_res = page.tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(4.0)  # 1 / 0.25 pixels per unit


def test_write_tiff_rgb_and_suffix(tmp_path):
    import tifffile

    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    [path] = samples.write_tiff(str(tmp_path / "photo"), rgb, {"rgb": True})
    assert path.endswith("photo.tif")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
        assert np.array_equal(tif.asarray(), rgb)


def test_manifest_commands_resolve():
    import importlib

    import npe2

    manifest = npe2.PluginManifest.from_distribution("napari-liif")
    names = {c.id: c.python_name for c in manifest.contributions.commands}
    for key in ("napari-liif.sample_photo", "napari-liif.sample_cells", "napari-liif.write_tiff",
                "napari-liif.upscale_widget"):
        mod, attr = names[key].split(":")
        assert callable(getattr(importlib.import_module(mod), attr))


@pytest.mark.gui
def test_samples_open_in_napari_and_save_through_the_writer(make_napari_viewer, tmp_path):
    import tifffile

    viewer = make_napari_viewer()
    viewer.open_sample("napari-liif", "cells")
    viewer.open_sample("napari-liif", "photo")
    assert [ly.name for ly in viewer.layers] == ["nuclei (synthetic)", "membranes (synthetic)",
                                                 "coffee (scikit-image)"]
    nuclei = viewer.layers["nuclei (synthetic)"]
    assert nuclei.data.dtype == np.uint16 and viewer.layers["coffee (scikit-image)"].rgb
    import napari

    paths = napari.save_layers(str(tmp_path / "nuclei.tif"), [nuclei], plugin="napari-liif")
    assert paths == [str(tmp_path / "nuclei.tif")]
    back = tifffile.imread(paths[0])
    assert back.dtype == np.uint16 and np.array_equal(back, nuclei.data)
