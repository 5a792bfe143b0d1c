"""Tiled encoding: equal to untiled, lazy (only the tiles a render needs) and bounded (LRU cache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = 1e-5
IMAGE = np.random.default_rng(11).random((40, 50, 3)).astype(np.float32)
OUT = (92, 117)  # scale 2.3 x 2.34


@pytest.mark.parametrize("encoder,radius", [("edsr-baseline", 6), ("edsr", 6), ("rdn", 9)])
def test_receptive_radius_is_exact(make_liif, encoder, radius):
    """Changing one input pixel changes the latents exactly ``receptive_radius`` pixels away
    and no further (EDSR: 1 + 2 x 2 blocks + 1 convs; toy RDN: 3 + 3 blocks x 2 layers), and
    the projected latents (3x3 unfold) one pixel further: the tile halo must cover both."""
    net, _ = make_liif(encoder)
    assert net.encoder.receptive_radius == radius
    # float64: at the edge of the toy RDN's field the change is ~2e-8, below fp32 resolution
    net = net.double()
    x = torch.rand(1, 3, 31, 31, dtype=torch.float64) * 2 - 1
    x2 = x.clone()
    x2[0, :, 15, 15] += 1.0
    with torch.no_grad():
        z, z2 = net.encode(x), net.encode(x2)
        p, p2 = net.project(z), net.project(z2)
    yy, xx = np.meshgrid(np.arange(31), np.arange(31), indexing="ij")
    dist = np.maximum(abs(yy - 15), abs(xx - 15))  # Chebyshev distance to the changed pixel
    for a, b, r in ((z, z2, radius), (p, p2, radius + 1)):
        changed = (a - b).abs().amax(1)[0].numpy()
        assert changed[dist > r].max() == 0.0
        assert changed[dist == r].max() > 1e-12


def _fields(model, tile, **kw):
    return model.encode(IMAGE, tile=tile, **kw), model.encode(IMAGE, tile=1024)


@pytest.mark.parametrize("encoder", ["edsr-baseline", "rdn"])
@pytest.mark.parametrize("tile", [7, 8])
@pytest.mark.parametrize("window_px", [1, 40 * 40])  # one tile per encoder window; several
def test_tiled_encoding_equals_untiled(make_liif, as_model, encoder, tile, window_px):
    net, spec = make_liif(encoder)
    model = as_model(net, spec)
    tiled, whole = _fields(model, tile, window_px=window_px)
    lat_t, lat_w = tiled.latents(0, 40, 0, 50), whole.latents(0, 40, 0, 50)
    assert tiled.tiles_encoded == -(-40 // tile) * -(-50 // tile) and whole.tiles_encoded == 1
    assert float((lat_t - lat_w).abs().max()) < TOL
    img_t, img_w = tiled.render(None, OUT), whole.render(None, OUT)
    assert float(np.abs(img_t - img_w).max()) * 2 < TOL
    assert img_w.std() > 0.05


def test_encoder_windows_pay_the_halo_once(make_liif, as_model):
    """Neighbouring tiles are encoded together, in windows no larger than ``window_px`` (halo
    included): fewer input pixels go through the encoder than tile by tile."""
    net, spec = make_liif("edsr-baseline")  # receptive radius 6: halo 7
    model = as_model(net, spec)
    single = model.encode(IMAGE, tile=8, window_px=1)
    single.prefetch()
    # 5 x 7 tiles, each with up to 7 pixels of halo per side, clipped at the image border
    edges = lambda n, t: sum(min(n, (k + 1) * t + 7) - max(0, k * t - 7) for k in range(-(-n // t)))  # noqa: E731
    assert single.pixels_encoded == edges(40, 8) * edges(50, 8)
    grouped = model.encode(IMAGE, tile=8, window_px=30 * 30)
    assert grouped.prefetch() == 35 and grouped.tiles_encoded == 35
    # windows of 1 x 1 tiles would be 22 x 22 (8 + 2 x 7); 30 x 30 fits 2 x 2 tiles (16 + 14)
    assert grouped.pixels_encoded < single.pixels_encoded * 0.7
    assert grouped.prefetch() == 0 and grouped.tiles_encoded == 35  # nothing encoded twice
    assert float((grouped.latents(0, 40, 0, 50) - single.latents(0, 40, 0, 50)).abs().max()) < TOL


def test_a_view_encodes_only_as_far_as_it_reaches_and_keeps_its_values_when_tiles_fill_in(make_liif, as_model):
    """``prefetch(region, whole=False)`` (a live view) runs the encoder over the region and its
    halo only, not over the whole tiles it meets; encoding the plane later (whole tiles) leaves
    what the view read bit for bit as it was, and everything within float rounding of untiled."""
    net, spec = make_liif("edsr-baseline")  # halo 7
    model = as_model(net, spec)
    region = (13.0, 17.0, 22.0, 29.0)  # latents 12..23 x 16..30 with the ensemble's margin
    part = model.encode(IMAGE, tile=16, window_px=60 * 60)
    part.prefetch(region, whole=False)
    assert part.pixels_encoded == (23 + 7 - 5) * (30 + 7 - 9)  # rows 5..30, columns 9..37
    tiles = model.encode(IMAGE, tile=16, window_px=60 * 60)
    tiles.prefetch(region)
    assert tiles.pixels_encoded == (32 + 7) * (32 + 7 - 9)  # whole tiles: rows 0..39, columns 9..39
    seen = part.render(region, (27, 36))
    before = part.pixels_encoded
    part.prefetch((9.0, 21.0, 18.0, 33.0), whole=False)  # a diagonal pan: edge tiles need more, lose some
    assert part.pixels_encoded > before and np.array_equal(part.render(region, (27, 36)), seen)
    before = part.pixels_encoded
    part.prefetch(region, whole=False)  # back: all there
    assert part.pixels_encoded == before
    part.prefetch()  # the idle pass: the whole plane, whole tiles
    assert np.array_equal(part.render(region, (27, 36)), seen)
    untiled = model.encode(IMAGE, tile=1024)
    assert float((part.latents(0, 40, 0, 50) - untiled.latents(0, 40, 0, 50)).abs().max()) < TOL


def test_whole_image_render_encodes_along_block_rows_in_windows(make_liif, as_model):
    """A plain render encodes ahead along each row of output blocks, several tiles per window,
    and gives the same image as tile-by-tile encoding."""
    net, spec = make_liif("edsr-baseline")
    model = as_model(net, spec)
    single = model.encode(IMAGE, tile=8, window_px=1)
    grouped = model.encode(IMAGE, tile=8, window_px=30 * 64)  # up to 1 x 5 tiles (22 x 54 + halo)
    for fld in (single, grouped):
        fld.block = 16
    a, b = single.render(None, OUT), grouped.render(None, OUT)
    assert single.tiles_encoded == grouped.tiles_encoded == 35
    assert grouped.pixels_encoded < 0.75 * single.pixels_encoded
    assert float(np.abs(a - b).max()) * 2 < TOL


def test_too_small_halo_would_show(make_liif, as_model):
    """The equality above is not a given: with a halo three pixels short, tiles differ."""
    net, spec = make_liif("edsr-baseline")
    model = as_model(net, spec)
    whole = model.encode(IMAGE, tile=1024).latents(0, 40, 0, 50)
    model.net.encoder.receptive_radius -= 3
    tiled = model.encode(IMAGE, tile=8, window_px=1).latents(0, 40, 0, 50)
    assert float((tiled - whole).abs().max()) > 1e-3


def test_render_encodes_only_the_tiles_it_needs(make_liif, as_model):
    net, spec = make_liif("edsr-baseline")
    field = as_model(net, spec).encode(IMAGE, tile=8)
    assert field.tiles_encoded == 0  # encoding is lazy
    # samples at 9.25 .. 14.75 (pixel-edge units); the ensemble looks half a pixel either way,
    # 8.75 .. 15.25 -> latents 8 .. 15: tile (1, 1) alone
    field.render((9, 9, 15, 15), (12, 12))
    assert field.tiles_encoded == 1
    # columns now reach 17.25 + 0.5 -> latent 17, in tile column 2: one more tile
    field.render((9, 9, 15, 17.5), (12, 17))
    assert field.tiles_encoded == 2
    field.render(None, (40, 50))
    assert field.tiles_encoded == 5 * 7
    field.render((9, 9, 15, 15), (30, 30))  # cached: nothing new
    assert field.tiles_encoded == 35


def test_cache_stays_bounded_and_results_unchanged(make_liif, as_model):
    net, spec = make_liif("edsr-baseline")  # decoder width 64: an 8 x 8 tile is 16 KiB in fp32
    model = as_model(net, spec)
    limit = 40_000  # room for two full tiles
    field = model.encode(IMAGE, tile=8, cache_bytes=limit)
    field.block = 16  # many output blocks, so the cache is checked often
    seen = []
    out = field.render(None, OUT, progress=lambda done, total: seen.append(field.cached_bytes()))
    assert len(seen) == 6 * 8 and max(seen) <= limit
    assert field.cached_bytes() <= limit
    assert field.tiles_encoded > 35  # evicted tiles were encoded again when needed
    whole = model.encode(IMAGE, tile=1024).render(None, OUT)
    assert float(np.abs(out - whole).max()) * 2 < TOL
