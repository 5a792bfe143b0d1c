"""Each channel of a hyperstack gets its own intensity map: a channel comes back exactly as that
channel upscaled alone, through the API, dask and the CLI (ImageJ and OME-TIFF inputs, whose
channel axis comes from the file's metadata)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_liif.api import upscale
from napari_liif.batch import file_channel_axis
from napari_liif.codec import PlaneCodec, channel_axis_from_labels, intensity_maps, layout
from napari_liif.intensity import IntensityMap

from batch_helpers import CHANNEL_RANGES, HOT, hyperstack, tiny_checkpoint, tiny_model, write_hyperstack


@pytest.fixture(scope="module")
def stack():
    return hyperstack()


@pytest.fixture(scope="module")
def alone(stack):
    """Each channel upscaled alone (a (z, y, x) stack of its own): the reference."""
    m = tiny_model(3)
    return np.stack([upscale(stack[:, c], scale=2, model=m) for c in range(stack.shape[1])], axis=1)


def test_the_fixture_has_the_issue_ranges(stack):
    for c, (lo, hi) in enumerate(CHANNEL_RANGES):
        v = np.delete(stack[:, c].ravel(), np.ravel_multi_index(HOT[:1] + HOT[2:], stack[:, c].shape)) \
            if c == HOT[1] else stack[:, c].ravel()
        assert (int(v.min()), int(v.max())) == (lo, hi)
    assert stack[HOT] == 65535


def test_each_channel_gets_its_own_map(stack):
    a, kind, ax = layout(stack, channel_axis=1)
    maps = intensity_maps(a, kind)
    assert (kind, ax) == ("channels", 1)
    # the hot pixel is trimmed from the filament channel's robust range; the others are exact
    assert [(maps[c].lo, maps[c].hi) for c in (0, 2)] == [CHANNEL_RANGES[0], CHANNEL_RANGES[2]]
    assert maps[1].lo == 138 and 3283 <= maps[1].hi < 65535


def test_api_channel_equals_the_channel_alone(stack, alone):
    out = upscale(stack, scale=2, model=tiny_model(3), channel_axis=1)
    assert out.shape == (5, 3, 32, 36) and out.dtype == np.uint16
    assert np.array_equal(out, alone)
    assert (out[2, 1, 10:12, 12:14] == 65535).all()  # the hot pixel is carried as a 2x2 block
    # the old way (one map over all channels) is far from it: this test can tell them apart
    shared = upscale(stack, scale=2, model=tiny_model(3), rgb=False)
    assert np.abs(shared[:, 2].astype(int) - alone[:, 2]).max() > 20


def test_dask_channel_equals_the_channel_alone(stack, alone):
    from napari_liif.dask_upscale import upscale_dask

    out = upscale_dask(stack, scale=2, model=tiny_model(3), channel_axis=1, chunks=16).compute()
    assert np.array_equal(out, alone)


@pytest.mark.parametrize("ome", [False, True], ids=["imagej", "ome-tiff"])
def test_cli_takes_the_channel_axis_from_the_file(tmp_path, input_guard, stack, alone, ome):
    from napari_liif.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    src = write_hyperstack(tmp_path / ("hs.ome.tif" if ome else "hs.tif"), stack, ome=ome)
    input_guard.protect(src)
    dst = tmp_path / ("out.ome.tif" if ome else "out.tif")
    assert main(["upscale", str(src), "--scale", "2", "-o", str(dst), "--checkpoint", str(ckpt), "--quiet"]) == 0
    with tifffile.TiffFile(dst) as tif:
        out = tif.asarray()
        assert tif.series[0].axes == "ZCYX"
    assert np.array_equal(out, alone)


def test_channel_axis_from_declared_axes():
    assert channel_axis_from_labels("ZCYX") == 1
    assert channel_axis_from_labels(["t", "c", "z", "y", "x"]) == 1
    assert channel_axis_from_labels(("z", "y", "x")) is None
    assert channel_axis_from_labels("YXS") is None
    # declared axes win over the shape guess; a user's --channel-axis wins over both
    assert file_channel_axis((5, 3, 12, 14), np.uint16, None, "ZCYX") == 1
    assert file_channel_axis((5, 3, 12, 14), np.uint16, 0, "ZCYX") == 0
    assert file_channel_axis((5, 3, 12, 14), np.uint16, None, None) is None
    assert file_channel_axis((5, 12, 14), np.uint16, None, "ZCYX") is None  # axes that do not fit: ignored


def test_plane_codec_float_decode_for_live_zoom():
    """What live zoom gets: float32 data units (no rounding) and alpha in [0, 1]."""
    codec = PlaneCodec.of("rgba", IntensityMap.of(np.uint16, 100, 1100))  # alpha: the dtype range
    window = np.zeros((2, 2, 4), np.uint16)
    window[..., :3], window[..., 3] = 600, 32768
    colour_times_alpha, alpha = codec.encode(window)
    assert colour_times_alpha[0, 0, 0] == pytest.approx(0.5 * 32768 / 65535)
    renders = [np.repeat(colour_times_alpha[..., :1], 3, -1), np.repeat(alpha[..., None], 3, -1)]
    out = codec.decode(renders, exact=False)
    assert out.dtype == np.float32
    assert out[0, 0, :3] == pytest.approx([600.0] * 3, abs=1e-3) and out[0, 0, 3] == pytest.approx(32768 / 65535)
    near = np.array([[[5000, 5000, 5000, 65535]]], np.uint16).repeat(2, 0).repeat(2, 1)
    codec.carry_values(near, out)  # beyond the map's range: shown as it is
    assert (out[..., :3] == 5000).all()


def test_a_gray_render_decodes_as_the_mean_of_its_three_channels():
    """The model renders three channels for a gray plane; the value is their mean (by hand here:
    (r + g + b) / 3 mapped back to 100..1100), whatever the render's memory layout."""
    codec = PlaneCodec.of("gray", IntensityMap.of(np.uint16, 100, 1100))
    render = np.random.default_rng(3).random((9, 11, 3)).astype(np.float32)
    got = codec.decode([render], exact=False)
    np.testing.assert_allclose(got, 100 + 1000 * (render[..., 0] + render[..., 1] + render[..., 2]) / 3, rtol=1e-6)
    assert np.array_equal(got, codec.decode([render.copy(order="F")], exact=False))
