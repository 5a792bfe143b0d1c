"""Issue 17, data the user hands over: readers read every image a file holds or refuse it in one
line; user intensity ranges that would destroy the data are refused; masked arrays keep their
mask; checkpoint tensors of the wrong dtype are refused; and the messages of the last bullet are
ours. Models are tiny: ``bilinear_model`` renders exact bilinear interpolation, so values are
checked against an independent numpy reference."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
import torch
from cli_helpers import one_line, run
from helpers_models import bilinear_numpy, nearest
from PIL import Image

from napari_liif.api import upscale
from napari_liif.checkpoint import CheckpointError, read_checkpoint
from napari_liif.engine import default_checkpoint, load_model
from napari_liif.io import ImageIOError, image_info, read_image, write_image

import dask.array as da  # noqa: E402
import tifffile  # noqa: E402


pytestmark = pytest.mark.usefixtures("single_thread_module")


# == readers =====================================================================================
IDX = np.array([[0, 1, 1, 2, 0, 1], [2, 2, 0, 1, 1, 0], [1, 0, 2, 2, 1, 0], [0, 0, 1, 2, 2, 1]], np.uint8)
PALETTE = [(255, 0, 0), (0, 255, 0), (10, 20, 250)]


def palette_png(path, transparent: int | None):
    im = Image.fromarray(IDX, "P")
    im.putpalette([c for rgb in PALETTE for c in rgb])
    im.save(path, **({} if transparent is None else {"transparency": transparent}))
    return path


def with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with a chunk inserted right after IHDR (tRNS belongs before the pixels)."""
    crc = struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + struct.pack(">I", len(body)) + kind + body + crc + png[33:]


def test_a_palette_png_with_a_transparent_entry_reads_as_rgba(tmp_path):
    src = palette_png(tmp_path / "p.png", transparent=0)
    expected = np.array([PALETTE[i] + ((0,) if i == 0 else (255,)) for i in IDX.ravel()], np.uint8).reshape(4, 6, 4)
    a = read_image(src)
    assert image_info(src) == ((4, 6, 4), np.dtype(np.uint8))
    assert a.dtype == np.uint8 and np.array_equal(a, expected)


def test_an_opaque_palette_png_reads_as_rgb(tmp_path):
    src = palette_png(tmp_path / "p.png", transparent=None)
    expected = np.array([PALETTE[i] for i in IDX.ravel()], np.uint8).reshape(4, 6, 3)
    assert image_info(src) == ((4, 6, 3), np.dtype(np.uint8))
    assert np.array_equal(read_image(src), expected)


@pytest.mark.parametrize("rgb", [False, True])
def test_an_8_bit_colour_key_becomes_an_alpha_channel(tmp_path, rgb):
    gray = (IDX * 100).astype(np.uint8)
    data = np.stack([gray, gray // 2, gray], -1) if rgb else gray
    key = tuple(int(v) for v in data[0, 0]) if rgb else int(data[0, 0])
    Image.fromarray(data).save(tmp_path / "k.png", transparency=key)
    alpha = np.where(IDX == IDX[0, 0], 0, 255).astype(np.uint8)
    expected = np.concatenate([data if rgb else data[..., None], alpha[..., None]], -1)
    assert image_info(tmp_path / "k.png") == (expected.shape, np.dtype(np.uint8))
    assert np.array_equal(read_image(tmp_path / "k.png"), expected)


@pytest.mark.parametrize("rgb", [False, True])
def test_a_16_bit_colour_key_becomes_an_alpha_channel(tmp_path, rgb):
    gray = (IDX.astype(np.uint16) * 20000 + 7)
    data = np.stack([gray, gray // 3, gray], -1) if rgb else gray
    write_image(tmp_path / "plain.png", data)
    key = data[1, 0]  # IDX == 2
    body = np.asarray(key, ">u2").tobytes()
    (tmp_path / "k.png").write_bytes(with_chunk((tmp_path / "plain.png").read_bytes(), b"tRNS", body))
    alpha = np.where(IDX == 2, 0, 65535).astype(np.uint16)
    expected = np.concatenate([data if rgb else data[..., None], alpha[..., None]], -1)
    assert image_info(tmp_path / "k.png") == (expected.shape, np.dtype(np.uint16))
    assert np.array_equal(read_image(tmp_path / "k.png"), expected)


@pytest.mark.parametrize("bits, scale, dtype", [(8, 257, np.uint8), (8, 80, np.uint16), (16, 1, np.uint16)])
def test_a_palette_tiff_reads_through_its_colour_map(tmp_path, bits, scale, dtype):
    from napari_liif.zarr_io import open_lazy

    n = 2**bits
    cmap = ((np.arange(3 * n, dtype=np.uint32).reshape(3, n) * 7 + 5) % 256 * scale).astype(np.uint16)
    idx = IDX.astype(np.uint16) * 20000 if bits == 16 else IDX
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=cmap)
    expected = np.stack([cmap[c][idx] // (257 if dtype == np.uint8 else 1) for c in range(3)], -1).astype(dtype)
    a = read_image(tmp_path / "p.tif")
    assert image_info(tmp_path / "p.tif") == ((4, 6, 3), np.dtype(dtype))
    assert a.dtype == dtype and np.array_equal(a, expected)
    assert np.array_equal(open_lazy(tmp_path / "p.tif").compute(), expected)


def test_associated_alpha_is_read_as_straight_alpha(tmp_path):
    from napari_liif.zarr_io import open_lazy

    alpha = np.array([0, 255, 51, 85, 255, 51], np.uint8)[None, :].repeat(4, 0)
    straight = (np.arange(4 * 6 * 3).reshape(4, 6, 3) % 17 * 15).astype(np.uint8)  # multiples of 15
    straight[alpha == 0] = 0
    stored = np.concatenate([(straight.astype(np.int64) * alpha[..., None] // 255).astype(np.uint8),
                             alpha[..., None]], -1)  # exact: 15 * 51 and 15 * 85 are multiples of 255
    tifffile.imwrite(tmp_path / "a.tif", stored, photometric="rgb", extrasamples=["assocalpha"])
    expected = np.concatenate([straight, alpha[..., None]], -1)
    assert image_info(tmp_path / "a.tif") == ((4, 6, 4), np.dtype(np.uint8))
    assert np.array_equal(read_image(tmp_path / "a.tif"), expected)
    assert np.array_equal(open_lazy(tmp_path / "a.tif").compute(), expected)
    tifffile.imwrite(tmp_path / "u.tif", stored, photometric="rgb", extrasamples=["unassalpha"])
    assert np.array_equal(read_image(tmp_path / "u.tif"), stored)  # straight alpha already: as stored


def _mixed_series(path):
    with tifffile.TiffWriter(path) as w:
        w.write(np.ones((10, 12), np.uint16))
        w.write(np.ones((5, 6), np.uint16))
    return ("the TIFF holds 2 images (series) of shapes (10, 12), (5, 6); napari-liif reads one image or one "
            "stack of equal pages per file: save each image as its own file")


def _mixed_pages(path):  # a plain multi-page TIFF (not tifffile's): one series, a second page dropped
    first, second = Image.fromarray(np.zeros((10, 12), np.uint8)), Image.fromarray(np.zeros((5, 6), np.uint8))
    first.save(path, save_all=True, append_images=[second])
    return ("the TIFF's pages have 2 different shapes ((10, 12), (5, 6)); napari-liif reads one image or one stack "
            "of equal pages per file: save each shape as its own file")


@pytest.mark.parametrize("make", [_mixed_series, _mixed_pages])
def test_a_tiff_of_several_shapes_is_refused_in_one_line(capsys, tmp_path, ckpt, input_guard, make):
    from napari_liif.zarr_io import open_lazy

    src = tmp_path / "user" / "mixed.tif"
    src.parent.mkdir()
    why = make(src)
    input_guard.protect(src)
    assert image_info(src) is None
    for read in (read_image, open_lazy):
        with pytest.raises(ImageIOError) as info:
            read(src)
        assert str(info.value) == f"{src}: {why}"
    for extra in ([], ["--dask"]):
        out = tmp_path / ("o.zarr" if extra else "o.tif")
        rc, printed, err = run(capsys, "upscale", src, "--scale", "2", "-o", out, "--checkpoint", ckpt, "--quiet", *extra)
        assert (rc, printed) == (1, "") and one_line(err) == f"napari-liif: error: {src}: {why}"
        assert sorted(os.listdir(tmp_path)) == ["user"]


def test_an_animated_png_is_refused(tmp_path):
    frames = [Image.fromarray(np.full((6, 7), 40 * k, np.uint8)) for k in range(3)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    assert image_info(tmp_path / "a.png") is None
    with pytest.raises(ImageIOError) as info:
        read_image(tmp_path / "a.png")
    assert str(info.value) == (f"{tmp_path / 'a.png'}: the file holds 3 images (an animated PNG); napari-liif reads "
                               "files of one image: save the frames as a TIFF stack or as separate files")


def _pillow(mode, ext=".png", **kw):
    def make(path):
        base = np.arange(4 * 6 * 4, dtype=np.uint8).reshape(4, 6, 4) * 2
        im = {"1": lambda: Image.fromarray(IDX > 0), "L": lambda: Image.fromarray(base[..., 0]),
              "LA": lambda: Image.fromarray(base[..., :2], "LA"), "RGB": lambda: Image.fromarray(base[..., :3]),
              "RGBA": lambda: Image.fromarray(base), "CMYK": lambda: Image.fromarray(base, "CMYK"),
              "I;16": lambda: Image.fromarray(base[..., 0].astype(np.uint16) * 250)}[mode]()
        im.save(path.with_suffix(ext), **kw)
        return path.with_suffix(ext)
    return make


@pytest.mark.parametrize("make, shape, dtype", [
    (_pillow("1"), (4, 6), np.bool_), (_pillow("L"), (4, 6), np.uint8), (_pillow("LA"), (4, 6, 2), np.uint8),
    (_pillow("RGB"), (4, 6, 3), np.uint8), (_pillow("RGBA"), (4, 6, 4), np.uint8),
    (_pillow("I;16"), (4, 6), np.uint16), (_pillow("L", ".jpg"), (4, 6), np.uint8),
    (_pillow("RGB", ".jpg"), (4, 6, 3), np.uint8), (_pillow("CMYK", ".jpg"), (4, 6, 3), np.uint8),
    (lambda p: palette_png(p.with_suffix(".png"), 1), (4, 6, 4), np.uint8),
    (lambda p: write_image(p.with_suffix(".png"), np.ones((4, 6, 3), np.uint16)), (4, 6, 3), np.uint16),
    (lambda p: write_image(p.with_suffix(".tif"), np.ones((3, 4, 6), np.float32)), (3, 4, 6), np.float32),
])
def test_image_info_is_what_read_image_gives(tmp_path, make, shape, dtype):
    src = make(tmp_path / "f")
    a = read_image(src)
    assert (a.shape, a.dtype) == (shape, np.dtype(dtype)) and image_info(src) == (shape, np.dtype(dtype))


def test_the_command_upscales_a_transparent_palette_png_as_rgba(capsys, tmp_path, bmodel, input_guard):
    from napari_liif.checkpoint import save_safetensors

    src = palette_png(tmp_path / "p.png", transparent=0)
    input_guard.protect(src)
    ckpt = save_safetensors(tmp_path / "bilinear.safetensors", bmodel.net, bmodel.spec)
    rc, out, err = run(capsys, "upscale", src, "--scale", "2", "-o", tmp_path / "o.png", "--checkpoint", ckpt)
    assert (rc, err) == (0, "")
    res = read_image(tmp_path / "o.png")
    unit_alpha = bilinear_numpy(np.where(IDX == 0, 0.0, 1.0), (8, 12))
    alpha = np.rint(unit_alpha * 255)
    assert res.shape == (8, 12, 4) and np.abs(res[..., 3] - alpha).max() <= 1 and (res[..., 3] == 0).sum() == 6
    # colour went through premultiplied by alpha and came back divided by the upscaled alpha; 0 where that is 0
    rgb = np.array([PALETTE[i] for i in IDX.ravel()], np.float64).reshape(4, 6, 3)
    seen = unit_alpha > 0
    for c in range(3):
        premultiplied = bilinear_numpy(rgb[..., c] * np.where(IDX == 0, 0.0, 1.0), (8, 12))
        expected = np.where(seen, premultiplied / np.where(seen, unit_alpha, 1.0), 0.0)
        assert np.abs(res[..., c] - expected).max() <= 0.5 + 1e-6, c


# == ranges ======================================================================================
RULE = "(it needs at least 1/100 to survive)"


def _range_cases():
    gen = np.random.default_rng(5)
    u16 = gen.integers(100, 4000, (8, 9)).astype(np.uint16)
    u16[0, 0], u16[-1, -1] = 100, 3999
    unit = gen.random((8, 9))
    unit[0, 0], unit[-1, -1] = 0.0, 1.0
    big = (2**62 + np.arange(8 * 9).reshape(8, 9) * 3).astype(np.int64)
    return [
        (u16, (-1e30, 1e30), "limits (-1e+30, 1e+30) on data ranging from 100 to 3999: the data would span only "
                             f"1.95e-27 of the model's [0, 1] range {RULE}; give limits close to the data's range "
                             "(e.g. 100,3999) or none (the robust range)"),
        (unit, (0, 1e6), "limits (0, 1e+06) on data ranging from 0 to 1: the data would span only 1e-06 of the "
                         f"model's [0, 1] range {RULE}; give limits close to the data's range (e.g. 0,1) or none "
                         "(the robust range)"),
        (big, (-2**63, 2**63 - 1), "limits (-9223372036854775808, 9223372036854775807) on data ranging from "
                                   "4611686018427387904 to 4611686018427388117: the data would span only 1.15e-17 of "
                                   f"the model's [0, 1] range {RULE}; give limits close to the data's range (e.g. "
                                   "4611686018427387904,4611686018427388117) or none (the robust range)"),
        (unit, (5, 6), f"limits (5, 6) on data ranging from 0 to 1: the data would lie outside the model's [0, 1] range "
                       f"{RULE}; give limits close to the data's range (e.g. 0,1) or none (the robust range)"),
    ]


@pytest.mark.parametrize("case", range(4))
def test_limits_that_would_destroy_the_data_are_refused(bmodel, case):
    a, limits, why = _range_cases()[case]
    with pytest.raises(ValueError) as info:
        upscale(a, scale=2, model=bmodel, limits=limits)
    assert str(info.value) == why


def test_dask_refuses_them_too(bmodel):
    from napari_liif.dask_upscale import upscale_dask

    a, limits, why = _range_cases()[0]
    with pytest.raises(ValueError) as info:
        upscale_dask(a, scale=2, model=bmodel, limits=limits, chunks=8).compute()
    assert str(info.value) == why


@pytest.mark.parametrize("dask", [False, True])
def test_the_command_refuses_them_in_one_line(capsys, tmp_path, ckpt, user_file, dask):
    a, _, why = _range_cases()[0]
    src = user_file("a.tif", a)
    out = tmp_path / ("o.zarr" if dask else "o.tif")
    rc, printed, err = run(capsys, "upscale", src, "--scale", "2", "--limits=-1e30,1e30", "-o", out,
                           "--checkpoint", ckpt, "--quiet", *(["--dask"] if dask else []))
    assert (rc, printed) == (1, "") and one_line(err) == f"napari-liif: error: {src}: {why}"
    assert sorted(os.listdir(tmp_path)) == ["user"]


def test_the_rule_is_one_hundredth_of_the_limits(bmodel):
    a = _range_cases()[1][0]  # valid values from exactly 0 to 1
    upscale(a, scale=2, model=bmodel, limits=(0, 99.9))
    with pytest.raises(ValueError, match=r"span only 0\.0099 of"):
        upscale(a, scale=2, model=bmodel, limits=(0, 101))
    with pytest.raises(ValueError, match=r"^percentiles \(40, 40\) give limits \(0\.\d+, 0\.\d+\) on data ranging "):
        upscale(np.repeat(a, 2, axis=1)[:, :17], scale=2, model=bmodel, percentiles=(40, 40))
    const = np.full((5, 6), 7, np.uint16)
    assert np.array_equal(upscale(const, scale=2, model=bmodel, limits=(0, 1e30)), np.full((10, 12), 7, np.uint16))


def test_results_under_wide_limits_stay_inside_the_data(bmodel):
    a = _range_cases()[1][0]
    lo, hi = 0.0, 50.0  # the data spans 1/50 of them: allowed
    out = upscale(a, scale=2, model=bmodel, limits=(lo, hi))
    u = (a - lo) / (hi - lo)
    expected = np.clip(bilinear_numpy(u, out.shape) * (hi - lo) + lo, 0.0, 1.0)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - expected).max() < 1e-5 * (hi - lo)


# == masked arrays ===============================================================================
def _masked_input():
    gen = np.random.default_rng(8)
    a = gen.uniform(10.0, 20.0, (10, 12))
    a[2:4, 3:6], a[9, 0], a[0, 11] = -9999.0, -9999.0, -9999.0
    return a, np.ma.masked_equal(a, -9999.0)


def test_a_masked_array_keeps_its_mask_and_never_bleeds_into_valid_pixels(bmodel):
    a, ma = _masked_input()
    out = upscale(ma, scale=2, model=bmodel)
    assert isinstance(out, np.ma.MaskedArray) and out.dtype == np.float64
    mask = nearest(a == -9999.0, out.shape)
    assert np.array_equal(np.ma.getmaskarray(out), mask) and mask.sum() == 4 * 8
    assert np.all(out.data[mask] == -9999.0)
    valid = a[a != -9999.0]
    lo, hi = valid.min(), valid.max()
    u = np.where(a == -9999.0, 0.0, (a - lo) / (hi - lo))  # masked values enter as NaN does: at lo
    expected = bilinear_numpy(u, out.shape) * (hi - lo) + lo
    assert np.abs(out.data[~mask] - expected[~mask]).max() < 1e-5 * (hi - lo)
    assert out.data[~mask].min() >= lo  # the plain array pulls -9999 into dozens of pixels
    assert (upscale(a, scale=2, model=bmodel) < lo).sum() > 50


def test_a_masked_integer_array_comes_back_as_integers(bmodel):
    a, _ = _masked_input()
    ai = np.where(a == -9999.0, -9999, np.rint(a * 100)).astype(np.int32)
    out = upscale(np.ma.masked_equal(ai, -9999), scale=2, model=bmodel)
    ref = upscale(np.ma.masked_equal(ai.astype(np.float64), -9999.0), scale=2, model=bmodel)
    assert out.dtype == np.int32 and np.array_equal(out.mask, ref.mask)
    assert np.array_equal(out.data[~out.mask], np.rint(ref.data[~ref.mask]).astype(np.int32))
    assert np.all(out.data[out.mask] == -9999) and out.data[~out.mask].min() >= 1000


def test_dask_honours_the_mask_of_numpy_and_dask_masked_arrays(bmodel):
    from napari_liif.dask_upscale import upscale_dask

    a, ma = _masked_input()
    expected = upscale(ma, scale=2, model=bmodel)
    lazy = da.ma.masked_equal(da.from_array(a, chunks=5), -9999.0)
    for arr in (ma, lazy):
        got = upscale_dask(arr, scale=2, model=bmodel, chunks=7).compute()
        assert isinstance(got, np.ma.MaskedArray)
        assert np.array_equal(got.mask, expected.mask) and np.array_equal(got.data, expected.data)


def test_masks_follow_channels_and_colour_and_an_empty_mask_changes_nothing(bmodel):
    gen = np.random.default_rng(9)
    ch = gen.integers(0, 4000, (3, 8, 9)).astype(np.uint16)
    mask = np.zeros(ch.shape, bool)
    mask[1, 2, 3] = True
    out = upscale(np.ma.MaskedArray(ch, mask=mask), scale=2, model=bmodel, channel_axis=0)
    assert out.dtype == np.uint16 and np.array_equal(np.argwhere(out.mask), [[1, r, c] for r in (4, 5) for c in (6, 7)])
    rgba = gen.integers(0, 256, (8, 9, 4)).astype(np.uint8)
    assert np.array_equal(upscale(np.ma.array(rgba), scale=2, model=bmodel).data, upscale(rgba, scale=2, model=bmodel))
    with pytest.raises(ValueError, match=r"^preserve_flux needs every pixel, and 1 are masked; fill them"):
        upscale(np.ma.MaskedArray(ch[0], mask=mask[1]), scale=2, model=bmodel, preserve_flux=True)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_masked_rgba_keeps_its_alpha_and_dask_agrees(bmodel, dtype):
    from napari_liif.dask_upscale import upscale_dask

    top = np.iinfo(dtype).max
    rgba = np.random.default_rng(10).integers(0, top, (8, 9, 4), endpoint=True).astype(dtype)
    rgba[..., 3] = top
    mask = np.zeros(rgba.shape, bool)
    mask[2, 3, :] = True
    out = upscale(np.ma.MaskedArray(rgba, mask=mask), scale=2, model=bmodel)
    assert out.dtype == dtype and np.array_equal(out.mask, nearest(mask, (16, 18)))
    assert np.all(out.data[..., 3][~out.mask[..., 3]] == top)  # opaque stays opaque around the hole
    got = upscale_dask(np.ma.MaskedArray(rgba, mask=mask), scale=2, model=bmodel, chunks=5).compute()
    assert np.array_equal(got.data, out.data) and np.array_equal(got.mask, out.mask)


def test_a_masked_uint8_value_never_drags_its_neighbours(bmodel):
    a = np.full((6, 7), 100, np.uint8)
    a[0, 0], a[3, 3] = 101, 7
    out = upscale(np.ma.masked_equal(a, 7), scale=2, model=bmodel)
    assert out.dtype == np.uint8 and out.mask.sum() == 4 and np.all(out.data[out.mask] == 7)
    assert set(np.unique(out.data[~out.mask])) <= {100, 101}  # the plain array pulls 7 in
    assert upscale(a, scale=2, model=bmodel).min() < 100


def test_masked_64_bit_integers_beyond_float64_are_refused(bmodel):
    a = np.ma.masked_equal(np.array([[2**60, 1, 0], [4, 5, 6]], np.int64), 0)
    with pytest.raises(ValueError) as info:
        upscale(a, scale=2, model=bmodel)
    assert str(info.value) == ("a masked int64 array with values beyond 2^53 (1 to 1152921504606846976) cannot be "
                               "upscaled exactly; fill the masked values (e.g. a.filled(...)) and pass a plain array")


# == checkpoints =================================================================================
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_a_weight_of_the_wrong_dtype_is_refused_before_use(capsys, tmp_path, fmt):
    from safetensors.torch import save_file

    spec, sd, meta = read_checkpoint(default_checkpoint())
    key = sorted(k for k, t in sd.items() if t.is_floating_point())[3]
    sd = dict(sd)
    sd[key] = (sd[key] * 1000).to(torch.int32)
    path = tmp_path / f"resaved.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=meta)
    else:
        torch.save({"model": {"name": spec["name"], "args": spec["args"], "sd": sd}}, path)
    why = (f"{path}: weights do not match the spec: {key} has dtype torch.int32, the spec asks for a floating-point "
           "dtype (torch.float32); the file is damaged or was not saved from this model")
    with pytest.raises(CheckpointError) as info:
        load_model(path, device="cpu")
    assert str(info.value) == why
    rc, out, err = run(capsys, "info", path)
    assert (rc, out) == (2, "") and one_line(err) == f"napari-liif: error: {why}"


# == messages ====================================================================================
@pytest.mark.parametrize("args, why", [
    (["--scale", "2", "--suffix=/x"], "output suffix '/x' must be part of a file name (no '/', '\\' or NUL): it is "
                                      "added to each input's name, as in photo_big.png for --suffix _big; use -o to "
                                      "write elsewhere"),
    (["--scale", "2", "--channel-axis", "0"], "{src}: channel_axis=0 on an image of shape (10, 12): a 2-D image has no "
                                              "channel axis besides its two spatial ones; drop channel_axis (on the "
                                              "command line --channel-axis)"),
    (["--scale", "1e300"], "{src}: scale 1e+300 would make an axis of 10 pixels 1e+301 pixels long, too large to "
                           "allocate (at most 1,099,511,627,776); give a smaller scale"),
])
def test_argument_messages_are_one_line_of_ours(capsys, tmp_path, ckpt, user_file, args, why):
    src = user_file("a.npy", np.arange(120, dtype=np.uint16).reshape(10, 12))
    rc, out, err = run(capsys, "upscale", src, *args, "--checkpoint", ckpt, "--quiet")
    line = one_line(err)
    assert (rc, out) == (2, "") and line == f"napari-liif: error: {why.format(src=src)}" and len(line) < 300
    assert sorted(os.listdir(src.parent)) == ["a.npy"]
