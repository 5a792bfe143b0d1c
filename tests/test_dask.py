"""``upscale_dask``: chunked results equal the in-memory upscale (gray, RGB, stacks, channels,
non-integer and anisotropic scales, chunk edges that cut the renderer's blocks), lazily,
locally and on a two-process LocalCluster; zarr / OME-Zarr round trips; the --dask CLI."""

from __future__ import annotations

import numpy as np
import pytest

from batch_helpers import tiny_checkpoint, tiny_model
from napari_liif.api import upscale
from napari_liif.dask_upscale import ModelRef, _grid, _window, upscale_dask
from napari_liif.outputs import OutputError
from napari_liif.zarr_io import guess_axes, is_complete, read_ome_metadata, read_zarr, upscaled_transform, write_zarr

import dask.array as da


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(42)


def _same(result: np.ndarray, expected: np.ndarray) -> None:
    """Exact for integers; within 1e-5 for floats."""
    assert result.dtype == expected.dtype
    assert result.shape == expected.shape
    if expected.dtype.kind in "iub":
        n_diff = int(np.count_nonzero(result != expected))
        assert n_diff == 0, f"{n_diff} of {expected.size} values differ"
    else:
        assert float(np.max(np.abs(result.astype(np.float64) - expected))) < 1e-5


def test_gray_uint16_unaligned_chunks_equal_in_memory(model, rng):
    img = rng.integers(0, 60000, (70, 52)).astype(np.uint16)
    expected = upscale(img, scale=2, model=model)
    lazy = upscale_dask(img, scale=2, model=model, chunks=(48, 40))  # cuts the 64-pixel render blocks
    assert lazy.chunks == ((48, 48, 44), (40, 40, 24))
    _same(lazy.compute(), expected)


def test_windows_overlap_by_the_receptive_field(model):
    h, ho = 200, 400
    yc, table = _grid(model, h, ho, 0)
    halo = model.receptive_radius + 1
    w0, w1 = _window(model, h, yc, table, 128, 192, halo)
    # outputs 128..191 sample input rows 64..96; their ensemble latents are 63..96
    assert (w0, w1) == (63 - halo, 97 + halo)
    assert (w0, w1) == (56, 104)
    assert _window(model, h, yc, table, 0, 64, halo) == (0, 33 + halo)


def test_rgb_float_non_integer_scale(model, rng):
    img = rng.random((41, 37, 3)).astype(np.float32)
    expected = upscale(img, scale=2.5, model=model)
    result = upscale_dask(img, scale=2.5, model=model, chunks=37).compute()
    assert np.array_equal(result, expected)  # bit-identical, like the integer layouts
    assert result.shape == (102, 92, 3)


def test_rgba_uint8_and_anisotropic_size(model, rng):
    img = rng.integers(0, 256, (23, 30, 4)).astype(np.uint8)
    img[..., 3] = 255  # opaque: a constant alpha plane stays exactly constant
    expected = upscale(img, size=(47, 101), model=model)
    result = upscale_dask(img, size=(47, 101), model=model, chunks=(20, 64)).compute()
    _same(result, expected)
    assert np.all(result[..., 3] == 255)


def test_stack_with_a_constant_plane(model, rng):
    img = rng.integers(100, 4000, (2, 3, 24, 30)).astype(np.uint16)
    img[1, 2] = 777
    expected = upscale(img, scale=1.5, model=model)
    lazy = upscale_dask(img, scale=1.5, model=model, chunks=(20, 25))
    assert lazy.chunks[:2] == ((1, 1), (1, 1, 1))  # one plane per chunk
    result = lazy.compute()
    _same(result, expected)
    assert np.all(result[1, 2] == 777)


def test_channel_axis_stays_and_maps_are_per_channel(model, rng):
    img = np.stack([rng.integers(0, 500, (26, 22)), rng.integers(20000, 60000, (26, 22))], 1).astype(np.uint16)
    expected = upscale(img, scale=2, model=model, channel_axis=1)
    result = upscale_dask(img, scale=2, model=model, channel_axis=1, chunks=30).compute()
    assert result.shape == (26 * 2, 2, 22 * 2)
    _same(result, expected)
    assert result[:, 0].max() < 600 and result[:, 1].min() > 15000


def test_bilinear_residual_model_and_clamped_cell(rng):
    m = tiny_model(seed=5, bilinear_residual=True)
    img = rng.random((60, 45)).astype(np.float32) * 3 - 1
    expected = upscale(img, scale=(1.7, 3), model=m, cell="clamp")
    result = upscale_dask(img, scale=(1.7, 3), model=m, cell="clamp", chunks=50).compute()
    _same(result, expected)


def test_the_result_is_lazy(model, rng):
    img = rng.random((32, 32)).astype(np.float32)
    reads = []

    def counted(block):
        if block.size:  # dask also calls it once on an empty array to learn the output type
            reads.append(block.shape)
        return block

    src = da.from_array(img, chunks=16).map_blocks(counted, dtype=img.dtype)
    lazy = upscale_dask(src, scale=2, model=model, chunks=32)
    assert reads == [] and isinstance(lazy, da.Array)
    part = lazy[:32, :32].compute()  # one output chunk
    assert len(reads) > 0
    _same(part, upscale(img, scale=2, model=model)[:32, :32])


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="chunks"):
        upscale_dask(np.zeros((8, 8)), scale=2, model=model, chunks=0)
    with pytest.raises(TypeError, match="complex"):
        upscale_dask(np.zeros((8, 8), complex), scale=2, model=model)
    with pytest.raises(ValueError, match="cell"):
        upscale_dask(np.zeros((8, 8)), scale=2, model=model, cell="huge")
    with pytest.raises(ValueError, match="scale"):
        upscale_dask(np.zeros((8, 8)), scale=-1, model=model)


def test_model_ref_ships_weights_not_the_model(model):
    import pickle

    ref = ModelRef(model)
    assert ref.get() is model
    clone = pickle.loads(pickle.dumps(ref))
    rebuilt = clone.get()
    assert rebuilt is not model and clone.get() is rebuilt  # built once per process, then cached
    img = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    a = model.encode(img).render(shape=(16, 16))
    b = rebuilt.encode(img).render(shape=(16, 16))
    assert np.array_equal(a, b)


def test_local_cluster_equals_local(model, rng, tmp_path):
    import distributed
    import tifffile

    from napari_liif.zarr_io import open_lazy

    img = rng.integers(0, 65535, (40, 36)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", img, tile=(16, 16))  # shipped as a lazy TIFF, as the CLI reads it
    lazy = upscale_dask(open_lazy(tmp_path / "in.tif", chunk=20), scale=2, model=model, chunks=(40, 36))
    local = lazy.compute(scheduler="threads")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = lazy.compute()
        built = client.run(lambda: len(__import__("napari_liif.dask_upscale").dask_upscale._WORKER_MODELS))
    assert np.array_equal(remote, local)
    _same(remote, upscale(img, scale=2, model=model))
    assert len(built) == 2 and all(n <= 1 for n in built.values())
    assert sum(built.values()) >= 1


def test_ome_zarr_round_trip(tmp_path, model, rng):
    img = rng.integers(0, 4000, (3, 20, 24)).astype(np.uint16)
    lazy = upscale_dask(img, scale=2, model=model, chunks=16)
    scale, translate = upscaled_transform([0.5, 0.5], [10.0, -2.0], (20, 24), (40, 48))
    assert scale == [0.25, 0.25] and translate == [9.875, -2.125]
    path = write_zarr(lazy, tmp_path / "out.zarr", axes=["z", "y", "x"], scale=[2.0] + scale,
                      translation=[0.0] + translate)
    assert is_complete(path)
    back = read_zarr(path)
    assert back.chunks[1:] == ((16, 16, 8), (16, 16, 16))
    assert np.array_equal(back.compute(), upscale(img, scale=2, model=model))
    meta = read_ome_metadata(path)
    assert meta == {"axes": ["z", "y", "x"], "scale": [2.0, 0.25, 0.25], "translation": [0.0, 9.875, -2.125],
                    "units": [None, None, None], "levels": ["0"]}
    with pytest.raises(OutputError, match="exists .a complete store written by napari-liif.; pass overwrite=True"):
        write_zarr(lazy, path)


def test_plain_zarr_for_rgb_and_axis_guesses(tmp_path, rng):
    img = rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)
    path = write_zarr(da.from_array(img, chunks=(4, 5, 3)), tmp_path / "rgb.zarr")
    assert np.array_equal(read_zarr(path).compute(), img) and read_ome_metadata(path) is None
    assert guess_axes(3, rgb=True) is None
    assert guess_axes(4) == ["t", "z", "y", "x"]
    assert guess_axes(4, channel_axis=0) == ["c", "z", "y", "x"]
    assert guess_axes(4, channel_axis=1) is None  # z before c does not fit OME-NGFF


def test_cli_dask_npy_and_tiff_to_zarr_resumable(tmp_path, rng, capsys, input_guard):
    import tifffile

    from napari_liif.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", seed=3)
    m = tiny_model(seed=3)
    a = rng.integers(0, 65535, (30, 26)).astype(np.uint16)
    np.save(tmp_path / "a.npy", a)
    b = rng.random((2, 18, 20)).astype(np.float32)
    tifffile.imwrite(tmp_path / "b.tif", b)
    input_guard.protect(tmp_path / "a.npy", tmp_path / "b.tif")
    out = tmp_path / "out"
    args = ["upscale", str(tmp_path / "a.npy"), str(tmp_path / "b.tif"), "--scale", "2", "--dask",
            "--chunk", "12", "--checkpoint", str(ckpt), "--device", "cpu", "--quiet", "-o", str(out)]
    assert main(args) == 0
    assert "2 upscaled, 0 skipped" in capsys.readouterr().out
    za, zb = read_zarr(out / "a.zarr"), read_zarr(out / "b.zarr")
    assert za.chunks == ((24, 24, 12), (24, 24, 4))  # --chunk 12 input pixels = 24 output pixels
    _same(za.compute(), upscale(a, scale=2, model=m))
    _same(zb.compute(), upscale(b, scale=2, model=m))
    assert read_ome_metadata(out / "a.zarr")["translation"] == [-0.25, -0.25]
    assert main(args) == 0
    assert "0 upscaled, 2 skipped" in capsys.readouterr().out


def test_robust_maps_percentiles_and_carried_hot_pixels_equal_in_memory(model, rng, monkeypatch):
    import napari_liif.intensity as intensity

    monkeypatch.setattr(intensity, "SAMPLE_MAX", 500)  # the maps come from the regular sample
    img = rng.integers(300, 1200, (2, 40, 46)).astype(np.uint16)
    img[0, 4, 31] = img[1, 35, 2] = 65535  # hot pixels (off the sample grid), carried inside each chunk
    for kw in ({}, {"percentiles": (2, 98)}, {"limits": (400, 1000)}):
        expected = upscale(img, scale=1.7, model=model, **kw)
        result = upscale_dask(img, scale=1.7, model=model, chunks=(19, 23), **kw).compute()
        assert np.array_equal(result, expected), kw
    assert (result == 65535).any() and (result < 400).any()  # limits: values outside them carried as they are
    auto = upscale_dask(img, scale=2, model=model, chunks=(30, 30)).compute()
    assert (auto == 65535).sum() == 8  # each hot pixel is a 2 x 2 block
