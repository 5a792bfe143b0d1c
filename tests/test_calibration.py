"""Calibrated files: pixel size (divided by the upscale factor), units, z spacing and translate
survive our writers (TIFF, OME-Zarr pyramid) and come back through our napari reader, napari's
layer model, and the ImageJ tags Fiji reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from batch_helpers import tiny_checkpoint, tiny_model

from napari_liif.api import upscale
from napari_liif.calibration import Calibration, read_tiff_calibration
from napari_liif.readers import read_calibration
from napari_liif.io import read_image, write_image

CAL = Calibration((2.0, 0.25, 0.125), (5.0, 10.0, -2.0), ("micrometer",) * 3, ("z", "y", "x"))


def _imagej(path):
    """What Fiji reads: the ImageJ description and the resolution tags (pixels per unit)."""
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata
        page = tif.pages[0]
        xr, yr = page.tags["XResolution"].value, page.tags["YResolution"].value
        return meta, xr[1] / xr[0], yr[1] / yr[0]


def test_imagej_tiff_round_trip_and_what_fiji_reads(tmp_path):
    a = np.arange(3 * 10 * 12, dtype=np.uint16).reshape(3, 10, 12)
    path = write_image(tmp_path / "cal.tif", a, calibration=CAL)
    assert np.array_equal(read_image(path), a)
    assert read_tiff_calibration(path) == CAL  # exact, through our JSON entry
    meta, px, py = _imagej(path)
    assert (meta["unit"], meta["spacing"], px, py) == ("micron", 2.0, 0.125, 0.25)
    assert (meta["xorigin"], meta["yorigin"], meta["zorigin"]) == (16.0, -40.0, -2.5)  # -translate/scale
    # a file as ImageJ itself writes it (no JSON entry; ImageJ escapes the micro sign) reads the same from the standard keys
    plain = tmp_path / "fiji.tif"
    tifffile.imwrite(plain, a, imagej=True, resolution=(8.0, 4.0),
                     metadata={"axes": "ZYX", "unit": "\\u00B5m", "spacing": 2.0, "xorigin": 16.0, "yorigin": -40.0,
                               "zorigin": -2.5})
    assert read_tiff_calibration(plain) == CAL


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_dtypes_imagej_cannot_hold_keep_json_and_centimetre_resolution(tmp_path, dtype):
    a = np.ones((10, 12), dtype)
    cal = Calibration((0.25, 0.125), (1.0, 2.0), ("micrometer", "micrometer"), ("y", "x"))
    path = write_image(tmp_path / "f.tif", a, calibration=cal)
    assert read_tiff_calibration(path) == cal
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert not tif.is_imagej and page.tags["ResolutionUnit"].value == 3  # centimetre
        num, den = page.tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / 0.125)  # pixels per cm


def test_upscaled_calibration_overlays_the_input():
    up = CAL.upscaled((3, 10, 12), (3, 25, 30))
    assert up.scale == (2.0, 0.1, 0.05) and up.units == CAL.units
    # the output's first pixel covers the input's first pixel's top-left part: its centre sits
    # a quarter of the way into that pixel's scale (r = 0.4: centre at 0.5 r - 0.5 input pixels)
    assert up.translate == pytest.approx((5.0, 10.0 + 0.25 * (0.2 - 0.5), -2.0 + 0.125 * (0.2 - 0.5)))
    left_edge_in = CAL.translate[2] - CAL.scale[2] / 2
    left_edge_out = up.translate[2] - up.scale[2] / 2
    assert left_edge_out == pytest.approx(left_edge_in)


def test_cli_keeps_the_input_calibration(tmp_path, capsys, input_guard):
    from napari_liif.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src = tmp_path / "in.tif"
    a = np.random.default_rng(0).integers(100, 4000, (2, 12, 14)).astype(np.uint16)
    write_image(src, a, calibration=Calibration((3.0, 0.5, 0.5), (1.0, 4.0, 8.0), ("micrometer",) * 3,
                                                 ("z", "y", "x")))
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, a[0])
    input_guard.protect(src, plain)
    for inp, dst in ((src, tmp_path / "out.tif"), (plain, tmp_path / "out_plain.tif")):
        assert main(["upscale", str(inp), "--scale", "2", "-o", str(dst), "--checkpoint", str(ckpt), "--quiet"]) == 0
    out = read_calibration(tmp_path / "out.tif")
    assert out.scale == (3.0, 0.25, 0.25) and out.translate == (1.0, 3.875, 7.875)
    assert out.units == ("micrometer",) * 3 and out.axes == ("z", "y", "x")
    meta, px, _ = _imagej(tmp_path / "out.tif")
    assert (meta["spacing"], px, meta["unit"]) == (3.0, 0.25, "micron")
    # an uncalibrated input: the output is calibrated in input pixels, so it overlays the input
    p = read_calibration(tmp_path / "out_plain.tif")
    assert p.scale == (0.5, 0.5) and p.translate == (-0.25, -0.25) and p.units == (None, None)
    assert np.array_equal(read_image(tmp_path / "out.tif"), upscale(a, scale=2, model=tiny_model(3)))


@pytest.fixture
def plugins():
    """npe2's plugin manager with this package's manifest discovered (napari's reader lookup)."""
    import npe2

    pm = npe2.PluginManager.instance()
    if "napari-liif" not in pm:
        pm.discover()
    return pm


def test_napari_reader_and_writer_round_trip(tmp_path, plugins):
    from napari.components import ViewerModel

    from napari_liif.readers import napari_get_reader
    from napari_liif.samples import write_tiff

    v = ViewerModel()
    layer = v.add_image(np.arange(3 * 10 * 12, dtype=np.float32).reshape(3, 10, 12), scale=(2.0, 0.25, 0.125),
                        translate=(5.0, 10.0, -2.0), units=("micrometer", "micrometer", "nanometer"))
    data, meta, _ = layer.as_layer_data_tuple()
    [path] = write_tiff(str(tmp_path / "saved.tif"), data, meta)
    assert napari_get_reader(path) is not None
    [back] = v.open(path, plugin="napari-liif")
    assert np.array_equal(back.data, layer.data)
    np.testing.assert_array_equal(back.scale, layer.scale)
    np.testing.assert_array_equal(back.translate, layer.translate)
    assert [str(u) for u in back.units] == ["micrometer", "micrometer", "nanometer"]
    ij = _imagej(path)[0]
    assert (ij["unit"], ij["yunit"], ij["zunit"]) == ("nm", "micron", "micron")
    # an uncalibrated TIFF is left to napari's own reader
    tifffile.imwrite(tmp_path / "raw.tif", np.zeros((4, 4), np.uint8))
    assert napari_get_reader(str(tmp_path / "raw.tif")) is None


def test_cli_dask_writes_an_ome_zarr_pyramid_napari_opens_in_place(tmp_path, input_guard, plugins):
    from napari.components import ViewerModel

    from napari_liif.cli import main
    from napari_liif.zarr_io import read_levels, read_ome_metadata

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src = tmp_path / "big.tif"
    a = np.random.default_rng(1).integers(0, 4000, (150, 140)).astype(np.uint16)
    write_image(src, a, calibration=Calibration((0.5, 0.5), (10.0, 20.0), ("micrometer",) * 2, ("y", "x")))
    input_guard.protect(src)
    dst = tmp_path / "big.zarr"
    assert main(["upscale", str(src), "--scale", "2", "--dask", "--chunk", "64", "-o", str(dst),
                 "--checkpoint", str(ckpt), "--quiet"]) == 0
    meta = read_ome_metadata(dst)
    assert meta["axes"] == ["y", "x"] and meta["units"] == ["micrometer", "micrometer"]
    assert meta["levels"] == ["0", "1"]  # 300 x 280 halves once to below 256
    with open(dst / ".zattrs") as f:
        ds = json.load(f)["multiscales"][0]["datasets"]
    assert ds[0]["coordinateTransformations"] == [{"type": "scale", "scale": [0.25, 0.25]},
                                                  {"type": "translation", "translation": [9.875, 19.875]}]
    assert ds[1]["coordinateTransformations"] == [{"type": "scale", "scale": [0.5, 0.5]},
                                                  {"type": "translation", "translation": [10.0, 20.0]}]
    l0, l1 = (lv.compute() for lv in read_levels(dst))
    assert np.array_equal(l0, upscale(a, scale=2, model=tiny_model(3)))
    mean = l0.reshape(150, 2, 140, 2).astype(np.float64).mean(axis=(1, 3))
    assert np.array_equal(l1, np.round(mean).astype(np.uint16))
    [layer] = ViewerModel().open(str(dst), plugin="napari-liif")
    assert layer.multiscale and len(layer.data) == 2
    np.testing.assert_array_equal(layer.scale, [0.25, 0.25])
    np.testing.assert_array_equal(layer.translate, [9.875, 19.875])
    # the upscaled layer covers exactly what the input covers (pixel i spans translate + (i -+ 0.5) * scale):
    # the input's 150 x 140 pixels of 0.5 from (10, 20) span [9.75, 84.75] x [19.75, 89.75]
    shape = np.array(layer.data[0].shape)
    np.testing.assert_array_equal(layer.translate - 0.5 * layer.scale, [9.75, 19.75])
    np.testing.assert_array_equal(layer.translate + (shape - 0.5) * layer.scale, [84.75, 89.75])
