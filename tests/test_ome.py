"""OME outputs as the ecosystem reads them: OME-Zarr stores validated by ome-zarr-models and
reopened by napari-ome-zarr at the right scale; axes named and typed from the input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from batch_helpers import PIXEL_UM, Z_UM, hyperstack, tiny_checkpoint, tiny_model, write_hyperstack
from napari_liif.api import upscale
from napari_liif.ome import multiscales, ngff_order, validate_store
from napari_liif.zarr_io import read_levels, write_zarr


@pytest.fixture(scope="module")
def alone():
    a, m = hyperstack(), tiny_model(3)
    return np.stack([upscale(a[:, c], scale=2, model=m) for c in range(a.shape[1])], axis=1)


def _axes(path) -> list[tuple]:
    with open(path / ".zattrs") as f:
        ms = json.load(f)["multiscales"][0]
    return [(a["name"], a["type"], a.get("unit")) for a in ms["axes"]], ms


@pytest.mark.parametrize("ome", [False, True], ids=["imagej", "ome-tiff"])
def test_dask_hyperstack_store_validates_with_zcyx_axes_typed(tmp_path, input_guard, capsys, alone, ome):
    from napari_liif.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src = write_hyperstack(tmp_path / ("hs.ome.tif" if ome else "hs.tif"), hyperstack(), ome=ome)
    input_guard.protect(src)
    dst = tmp_path / "hs.zarr"
    # not --quiet: on a non-terminal (pytest's capture) no progress line at all, only the result
    assert main(["upscale", str(src), "--scale", "2", "--dask", "--chunk", "8", "-o", str(dst),
                 "--checkpoint", str(ckpt)]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (f"wrote {dst}\n", "")
    image = validate_store(dst)  # ome-zarr-models: metadata and arrays agree
    assert image.attributes.multiscales[0].version == "0.4"
    axes, ms = _axes(dst)
    # NGFF order puts the channel first; z, y, x keep their micrometres, the channel has no unit
    assert axes == [("c", "channel", None), ("z", "space", "micrometer"), ("y", "space", "micrometer"),
                    ("x", "space", "micrometer")]
    [level] = ms["datasets"]
    r = 0.5 * PIXEL_UM  # output pixel size; its centre sits a quarter input pixel before the input's
    assert level["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, Z_UM, r, r]},
        {"type": "translation", "translation": [0.0, 0.0, -0.25 * PIXEL_UM, -0.25 * PIXEL_UM]}]
    with open(dst / "0" / ".zarray") as f:
        assert json.load(f)["dimension_separator"] == "/"
    assert (dst / "0" / "1" / "2" / "0" / "0").is_file()  # chunk (c 1, z 2, 0, 0) under "/" keys
    [l0] = read_levels(dst)
    assert np.array_equal(np.moveaxis(l0.compute(), 0, 1), alone)  # each channel as that channel alone


def test_napari_ome_zarr_reopens_the_store_at_the_right_scale(tmp_path, input_guard, capsys):
    from napari_ome_zarr import _reader as reader
    from napari_liif.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src = write_hyperstack(tmp_path / "hs.tif", hyperstack())
    input_guard.protect(src)
    dst = tmp_path / "hs.zarr"
    assert main(["upscale", str(src), "--scale", "2", "--dask", "-o", str(dst), "--checkpoint", str(ckpt),
                 "--quiet"]) == 0
    [(data, kw, kind)] = reader.napari_get_reader(str(dst))(str(dst))
    capsys.readouterr()  # napari-ome-zarr prints the group's metadata
    levels = data if isinstance(data, list) else [data]
    assert kind == "image" and kw["channel_axis"] == 0 and levels[0].shape == (3, 5, 32, 36)
    np.testing.assert_allclose(kw["scale"], [Z_UM, 0.5 * PIXEL_UM, 0.5 * PIXEL_UM])


@pytest.mark.parametrize("axes, units", [
    (["t", "c", "z", "y", "x"], ["second", None, "micrometer", "micrometer", "micrometer"]),
    (["y", "x"], [None, None]),
])
def test_every_store_we_write_validates_with_its_pyramid(tmp_path, axes, units):
    shape = (2, 2, 3, 40, 36)[-len(axes):]
    a = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    dst = write_zarr(a, tmp_path / "s.zarr", axes=axes, scale=[0.5] * len(axes), units=units, levels=2)
    image = validate_store(dst)
    got, ms = _axes(dst)
    assert [n for n, _, _ in got] == axes and [u for _, _, u in got] == units
    assert [d["path"] for d in ms["datasets"]] == ["0", "1"]
    sc = [t for t in ms["datasets"][1]["coordinateTransformations"] if t["type"] == "scale"][0]["scale"]
    assert sc[-2:] == [1.0, 1.0] and sc[:-2] == [0.5] * (len(axes) - 2)  # y and x doubled on level 1
    assert len(image.attributes.multiscales[0].datasets) == 2


def test_ngff_order_and_refusals():
    assert ngff_order(["z", "c", "y", "x"]) == [1, 0, 2, 3]
    assert ngff_order(["y", "x", "c"]) == [2, 0, 1]
    assert ngff_order(["z", "y", "s"]) is None and ngff_order(["y", "y"]) is None
    with pytest.raises(ValueError) as info:  # three space axes and a second time axis
        multiscales(["t", "t", "y", "x"], [1.0] * 4, [0.0] * 4, [("0", [1.0] * 4, [0.0] * 4)], "bad")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("axes ['t', 't', 'y', 'x'] with scale [1.0, 1.0, 1.0, 1.0]")


def test_ome_tiff_stays_ome_tiff_with_sizes_divided_and_names_kept(tmp_path, input_guard, capsys):
    import xml.etree.ElementTree as ET

    import tifffile

    from napari_liif.cli import main
    from napari_liif.readers import read_calibration

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src = write_hyperstack(tmp_path / "hs.ome.tif", hyperstack(), ome=True)
    input_guard.protect(src)
    assert main(["upscale", str(src), "--scale", "2", "--checkpoint", str(ckpt), "--quiet"]) == 0
    dst = tmp_path / "hs_liif_x2.ome.tif"  # the default name keeps .ome.tif
    assert capsys.readouterr().out == f"wrote {dst}\n"
    with tifffile.TiffFile(dst) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZCYX" and tif.series[0].shape == (5, 3, 32, 36)
        pixels = next(el for el in ET.fromstring(tif.ome_metadata).iter() if el.tag.endswith("Pixels"))
    # what any OME reader sees: physical sizes divided by the factor, units and channel names kept
    assert {k: pixels.get(k) for k in ("PhysicalSizeX", "PhysicalSizeY", "PhysicalSizeZ", "PhysicalSizeXUnit",
                                       "PhysicalSizeZUnit")} == {
        "PhysicalSizeX": "0.08125", "PhysicalSizeY": "0.08125", "PhysicalSizeZ": "0.5",
        "PhysicalSizeXUnit": "\u00b5m", "PhysicalSizeZUnit": "\u00b5m"}
    assert [c.get("Name") for c in pixels if c.tag.endswith("Channel")] == ["DAPI", "actin", "puncta"]
    # and what our reader sees: the exact calibration, origin included (it overlays the input)
    cal = read_calibration(dst)
    assert cal.scale == (Z_UM, 1.0, PIXEL_UM / 2, PIXEL_UM / 2)
    assert cal.translate == (0.0, 0.0, -PIXEL_UM / 4, -PIXEL_UM / 4)
    assert cal.channel_names == ("DAPI", "actin", "puncta") and cal.axes == ("z", "c", "y", "x")
    # a second run over the folder skips the result, which is not taken for an input itself
    assert main(["upscale", str(tmp_path), "--scale", "2", "--checkpoint", str(ckpt), "--quiet"]) == 0
    assert capsys.readouterr().out == f"skipped: {dst} exists (use --overwrite)\n"
