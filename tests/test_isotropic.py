"""Upscaling along z (napari_liif.isotropic): geometry against linear interpolation written here,
per-channel independence, dask equal to in-memory, calibration through the CLI, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from batch_helpers import tiny_checkpoint, tiny_model
from helpers_models import bilinear_model

from napari_liif.api import output_shape, upscale
from napari_liif.calibration import Calibration
from napari_liif.cli import main
from napari_liif.io import read_image, write_image
from napari_liif.isotropic import mean_of
from napari_liif.readers import read_calibration


def linear_along_z(v: np.ndarray, n_out: int) -> np.ndarray:
    """Linear interpolation along axis 0 at output centres (j + 0.5) * n / n_out - 0.5, clamped
    at the first and last planes (LIIF's pixel-centre grid and the border padding)."""
    n = v.shape[0]
    pos = np.clip((np.arange(n_out) + 0.5) * n / n_out - 0.5, 0, n - 1)
    k0 = np.floor(pos).astype(int)
    k1 = np.minimum(k0 + 1, n - 1)
    w = (pos - k0)[:, None, None]
    return v[k0] * (1 - w) + v[k1] * w


@pytest.mark.parametrize("sz, n_out", [(3, 15), (2.5, 12), (4, 20)])
def test_z_follows_linear_interpolation_with_a_bilinear_model(sz, n_out):
    # the bilinear model renders exactly the bilinear interpolation of its input: along z only
    # (x and y unchanged) that is linear interpolation between planes, so every output plane is
    # where the pixel-centre rule puts it, for integer and fractional factors
    rng = np.random.default_rng(0)
    v = rng.random((5, 9, 11)).astype(np.float32) * 100 + 20
    out = upscale(v, scale=(sz, 1, 1), model=bilinear_model())
    assert out.shape == (n_out, 9, 11)
    assert np.abs(out - linear_along_z(v.astype(np.float64), n_out)).max() < 1e-3


def test_an_input_plane_lands_on_its_output_plane_and_xy_follows():
    # x3: output plane 3k + 1 is centred on input plane k and must equal it
    v = np.full((4, 8, 8), 10.0, np.float32)
    v[2] = 90.0
    out = upscale(v, scale=(3, 1, 1), model=bilinear_model())
    assert np.abs(out[7] - 90).max() < 1e-3 and np.abs(out[1] - 10).max() < 1e-3
    assert np.argmax(out[:, 4, 4]) == 7
    both = upscale(v, scale=(3, 2, 2), model=bilinear_model())
    assert both.shape == (12, 16, 16)
    assert output_shape(v.shape, scale=(3, 2, 2)) == ((12, 16, 16), (16, 16))
    assert np.abs(both - upscale(out, scale=2, model=bilinear_model())).max() < 1e-3


def test_channels_stay_apart_each_as_if_alone():
    rng = np.random.default_rng(1)
    z = rng.integers(200, 8000, (4, 12, 10)).astype(np.uint16)
    dim = rng.integers(90, 220, (4, 12, 10)).astype(np.uint16)
    stack = np.stack([z, dim], axis=1)  # Z C Y X
    m = tiny_model(3)
    out = upscale(stack, scale=(2, 1.5, 1.5), channel_axis=1, model=m)
    assert out.shape == (8, 2, 18, 15)
    assert np.array_equal(out[:, 0], upscale(z, scale=(2, 1.5, 1.5), model=m))
    assert np.array_equal(out[:, 1], upscale(dim, scale=(2, 1.5, 1.5), model=m))


def test_time_points_share_one_map_and_stay_apart():
    rng = np.random.default_rng(2)
    tz = rng.random((2, 3, 8, 8)).astype(np.float32)
    out = upscale(tz, scale=(2, 1, 1), model=bilinear_model())
    assert out.shape == (2, 6, 8, 8)
    for t in range(2):
        assert np.abs(out[t] - linear_along_z(tz[t].astype(np.float64), 6)).max() < 1e-5


def test_dask_equals_in_memory():
    da = pytest.importorskip("dask.array")
    from napari_liif.dask_upscale import upscale_dask

    rng = np.random.default_rng(3)
    v = rng.integers(100, 3000, (2, 4, 20, 18)).astype(np.uint16)  # Z C Y X
    v[1, 0, 3, 3] = 65535  # a hot pixel: carried back the same way on both paths
    m = tiny_model(3)
    lazy = upscale_dask(da.from_array(v, chunks=(1, 1, 7, 7)), scale=(2.5, 1.5, 1.5), channel_axis=1, model=m,
                        chunks=8)
    assert lazy.shape == (5, 4, 30, 27)
    assert np.array_equal(lazy.compute(), upscale(v, scale=(2.5, 1.5, 1.5), channel_axis=1, model=m))


@pytest.mark.parametrize("dtype", [np.uint64, np.int64, np.int8, np.uint16])
def test_integer_mean_is_exact_and_rounds_half_up(dtype):
    info = np.iinfo(dtype)
    a = np.array([info.max, info.min, info.max, 7, 0, -3 if info.min < 0 else 3], dtype)
    b = np.array([info.max, info.min, info.max - 1, 8, 1, -4 if info.min < 0 else 4], dtype)
    want = [(int(x) + int(y) + 1) // 2 for x, y in zip(a, b)]
    assert [int(v) for v in mean_of(a, b)] == want


def _stack_file(tmp_path, name="stack.tif"):
    rng = np.random.default_rng(4)
    a = rng.integers(100, 4000, (4, 10, 12)).astype(np.uint16)
    src = tmp_path / name
    write_image(src, a, calibration=Calibration((0.5, 0.125, 0.125), (1.0, 2.0, 3.0), ("micrometer",) * 3,
                                                 ("z", "y", "x")))
    return src, a


def test_cli_scales_z_and_divides_the_z_spacing(tmp_path, input_guard):
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src, a = _stack_file(tmp_path)
    input_guard.protect(src)
    dst = tmp_path / "out.tif"
    assert main(["upscale", str(src), "--scale", "2.5,1,1", "-o", str(dst), "--checkpoint", str(ckpt),
                 "--quiet"]) == 0
    assert np.array_equal(read_image(dst), upscale(a, scale=(2.5, 1, 1), model=tiny_model(3)))
    cal = read_calibration(dst)
    assert cal.scale == pytest.approx((0.2, 0.125, 0.125))
    # output plane j sits at z = 1.0 + 0.5 * ((j + 0.5) / 2.5 - 0.5): translate 1.0 + 0.5 * (0.2 - 0.5)
    assert cal.translate == pytest.approx((0.85, 2.0, 3.0)) and cal.axes == ("z", "y", "x")


def test_cli_isotropic_takes_the_factor_from_the_calibration(tmp_path, input_guard):
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src, a = _stack_file(tmp_path)
    input_guard.protect(src)
    dst = tmp_path / "iso.tif"
    assert main(["upscale", str(src), "--isotropic", "-o", str(dst), "--checkpoint", str(ckpt), "--quiet"]) == 0
    out = read_image(dst)
    assert out.shape == (16, 10, 12)  # 0.5 / 0.125 = 4 planes per input plane
    assert read_calibration(dst).scale == pytest.approx((0.125, 0.125, 0.125))
    dst2 = tmp_path / "iso2.tif"
    assert main(["upscale", str(src), "--isotropic", "2", "-o", str(dst2), "--checkpoint", str(ckpt),
                 "--quiet"]) == 0
    assert read_image(dst2).shape == (32, 20, 24)
    assert read_calibration(dst2).scale == pytest.approx((0.0625,) * 3)


def test_cli_dask_z_writes_the_z_spacing_into_the_store(tmp_path, input_guard):
    pytest.importorskip("dask")
    from napari_liif.zarr_io import read_levels, read_ome_metadata

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src, a = _stack_file(tmp_path)
    input_guard.protect(src)
    dst = tmp_path / "out.zarr"
    assert main(["upscale", str(src), "--scale", "2,1,1", "--dask", "--chunk", "8", "-o", str(dst),
                 "--checkpoint", str(ckpt), "--quiet"]) == 0
    meta = read_ome_metadata(dst)
    assert meta["axes"] == ["z", "y", "x"] and meta["scale"] == pytest.approx([0.25, 0.125, 0.125])
    assert np.array_equal(read_levels(dst)[0].compute(), upscale(a, scale=(2, 1, 1), model=tiny_model(3)))


@pytest.mark.parametrize("args, words", [
    (["--scale", "2,1,1"], "(2.0, 1.0, 1.0) asks for a z factor"),  # a 2-D image
    (["--scale", "0.5,1,1"], "below 1"),
    (["--scale", "2,1,1", "--preserve-flux"], "preserve-flux"),
    (["--isotropic"], "z spacing"),
])
def test_cli_refusals_are_one_line_before_work(tmp_path, capsys, input_guard, args, words):
    src = tmp_path / "flat.tif"
    write_image(src, np.random.default_rng(5).integers(0, 999, (10, 12)).astype(np.uint16))
    input_guard.protect(src)
    assert main(["upscale", str(src), "-o", str(tmp_path / "o.tif"), *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "o.tif").exists()


def test_batch_widget_plans_z_from_the_layer_scale_and_overlays_the_source():
    from napari.layers import Image

    from napari_liif._qt.batch_widget import folder_target, parse_z, plan_layer, run_layer_job

    data = np.random.default_rng(6).integers(100, 4000, (4, 10, 12)).astype(np.uint16)
    layer = Image(data, scale=(0.5, 0.125, 0.125), translate=(1.0, 0.0, 0.0))
    job = plan_layer(layer, (1, 2), 3, scale=(1, 1), z=parse_z("iso"))
    assert job.axes == (0, 1, 2) and job.out_shape == (16, 10, 12) and job.scale == (4, 1, 1)
    kw = job.layer_kwargs
    assert kw["scale"] == pytest.approx((0.125, 0.125, 0.125))
    assert kw["translate"] == pytest.approx((1.0 + 0.5 * (0.5 / 4 - 0.5), 0.0, 0.0))  # first plane's centre
    out = run_layer_job(job, data, tiny_model(3), "on")
    assert np.array_equal(out, upscale(data, scale=(4, 1, 1), model=tiny_model(3)))
    job2 = plan_layer(layer, (1, 2), 3, scale=(2, 2), z=parse_z("2.5"))
    assert job2.out_shape == (10, 20, 24) and kw["name"].startswith(layer.name)
    assert folder_target({"scale": (2, 2), "size": None, "z": 3.0}) == {"scale": (3.0, 2, 2), "size": None}
    for bad in ("0.5", "zz", "-1"):
        with pytest.raises(ValueError, match="z factor"):
            parse_z(bad)
    with pytest.raises(ValueError, match="no axis before"):
        plan_layer(Image(data[0]), (0, 1), 2, scale=(2, 2), z=2.0)
    with pytest.raises(ValueError, match="isotropic"):
        folder_target({"scale": (2, 2), "size": None, "z": "iso"})
