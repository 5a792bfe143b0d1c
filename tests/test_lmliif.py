"""LM-LIIF: the network equals the float64 reference of ``reference_lmliif``; official
LMF checkpoints (key names, shapes, file layout) load unchanged."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import reference_liif as R
import reference_lmliif as RL
from lmliif_helpers import build_lmliif, lmliif_spec
from napari_liif import models
from napari_liif.checkpoint import CheckpointError, build, read_checkpoint, save_safetensors

pytestmark = pytest.mark.usefixtures("single_thread", "tiny_rdn")

TOL = 1e-5
IMAGE_SHAPE = (11, 17)
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def image():
    return (0.2 + 0.6 * np.random.default_rng(5).random(IMAGE_SHAPE + (3,))).astype(np.float32)


def points(shape, n=250, seed=2) -> np.ndarray:
    """Random coordinates, inner latent centres (where the ensemble shift ties) and corners."""
    h, w = shape
    rnd = np.random.default_rng(seed).uniform(-1, 1, (n, 2))
    cy, cx = np.meshgrid(R.pixel_centre(np.arange(h - 1), h), R.pixel_centre(np.arange(w - 1), w), indexing="ij")
    corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], np.float64)
    return np.concatenate([rnd, np.stack([cy.ravel(), cx.ravel()], 1), corners]).astype(np.float32)


def reference(net, spec, image, coord, cell, bilinear=False):
    a = spec["args"]
    ia = a["imnet_spec"]["args"]
    z = R.encode_net(net, spec, image)
    return RL.query(z, RL.linears(net.hypernet), RL.linears(net.imnet), coord.astype(np.float64), cell,
                    hidden_dim=ia["hidden_dim"], hidden_depth=ia["hidden_depth"],
                    local_ensemble=a["local_ensemble"], feat_unfold=a["feat_unfold"],
                    cell_decode=a["cell_decode"], mod_input=a["mod_input"], mod_scale=ia["mod_scale"],
                    mod_shift=ia["mod_shift"], image=R.to_input(image) if bilinear else None)


def forward_diff(net, spec, image, cell=(0.23, 0.11), bilinear=False) -> float:
    coord = points(image.shape[:2])
    inp = torch.from_numpy((image.transpose(2, 0, 1)[None] - 0.5) / 0.5)
    cells = torch.tensor(cell, dtype=torch.float32).expand(1, len(coord), 2)
    with torch.no_grad():
        got = net(inp, torch.from_numpy(coord)[None], cells)[0].double().numpy()
    ref = reference(net, spec, image, coord, cell, bilinear)
    assert np.abs(ref).max() > 0.3 and ref.std() > 0.05  # outputs are not trivially small
    return float(np.abs(got - ref).max())


SWITCHES = list(itertools.product([False, True], repeat=4))  # ensemble, unfold, cell, mod_input


@pytest.mark.parametrize("le,fu,cd,mi", SWITCHES, ids=["".join(n if on else "-" for n, on in zip("EUCM", s))
                                                        for s in SWITCHES])
def test_every_switch_combination_matches_reference(image, le, fu, cd, mi):
    spec = lmliif_spec(local_ensemble=le, feat_unfold=fu, cell_decode=cd, mod_input=mi)
    net = build_lmliif(spec, seed=1)
    assert forward_diff(net, spec, image) < TOL


@pytest.mark.parametrize("encoder", ["edsr-baseline", "edsr", "rdn"])
def test_every_encoder_matches_reference(image, encoder):
    spec = lmliif_spec(encoder)
    assert forward_diff(build_lmliif(spec, seed=2), spec, image) < TOL


@pytest.mark.parametrize("kw", [dict(hidden_dim=16, hidden_depth=6, hyper_hidden=(48,)),
                                dict(hidden_dim=5, hidden_depth=1, hyper_hidden=()),
                                dict(hidden_dim=12, hidden_depth=2, hyper_hidden=(24, 20)),
                                dict(mod_scale=False), dict(mod_shift=False),
                                dict(mod_scale=False, mod_shift=False)],
                         ids=["official-sizes", "depth1-linear-hyper", "two-hyper-layers", "no-scale",
                              "no-shift", "unmodulated"])
def test_sizes_and_modulation_switches_match_reference(image, kw):
    spec = lmliif_spec(**kw)
    assert forward_diff(build_lmliif(spec, seed=3), spec, image, cell=(0.05, 0.4)) < TOL


def test_bilinear_residual_matches_reference(image):
    spec = lmliif_spec(bilinear_residual=True)
    net = build_lmliif(spec, seed=4)
    assert forward_diff(net, spec, image, bilinear=True) < TOL
    # the residual is really there: the reference without it is far off
    coord = points(image.shape[:2])
    with_res = reference(net, spec, image, coord, (0.23, 0.11), bilinear=True)
    assert np.abs(with_res - reference(net, spec, image, coord, (0.23, 0.11))).max() > 0.3


def test_modulations_depend_on_the_cell(image):
    """The cell enters the latent MLP: another cell changes every output, not only by the
    render MLP's own cell input (checked with the render MLP's cell weights zeroed)."""
    spec = lmliif_spec()
    net = build_lmliif(spec, seed=5)
    with torch.no_grad():
        net.imnet.linears[0].weight[:, -2:] = 0
    coord = points(image.shape[:2])
    a = reference(net, spec, image, coord, (0.1, 0.1))
    b = reference(net, spec, image, coord, (0.3, 0.3))
    assert np.abs(a - b).mean() > 1e-3
    assert forward_diff(net, spec, image, cell=(0.3, 0.3)) < TOL


def test_comparison_can_fail(image):
    """The check is sharp: a network whose render MLP skips the modulation of one layer
    differs from the reference by far more than the tolerance."""
    spec = lmliif_spec()
    net = build_lmliif(spec, seed=6)
    broken = copy.deepcopy(net)
    original = broken.split

    def split(mods):
        scale, shift, z = original(mods)
        scale = scale.clone()
        scale[..., 1, :] = 0
        return scale, shift, z

    broken.split = split
    assert forward_diff(broken, spec, image) > 100 * TOL


def test_official_key_names_and_shapes():
    """Both official LMF configurations (EDSR-baseline and RDN) build with exactly the keys
    and shapes of the released state dicts, from their released specs."""
    for name, entry in json.loads((DATA / "official_lmf_state_dict_keys.json").read_text()).items():
        net = models.make(entry["spec"])
        got = {k: list(v.shape) for k, v in net.state_dict().items()}
        assert got == dict(entry["keys_and_shapes"]), name
        macs = net.macs()
        assert macs["per_latent"] == 578 * 208 + 208 * 208  # 163,488
        assert macs["per_pixel"] == 4 * (20 * 16 + 5 * 16 * 16 + 16 * 3)  # 6,592


def official_file(tmp_path, net, spec, name="lmf.pth") -> Path:
    """A file laid out as the official LMF training code saves one, optimizer state included."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    path = tmp_path / name
    torch.save({"model": {"name": "lmliif", "args": spec["args"], "sd": net.state_dict()},
                "optimizer": {"name": "adam", "args": {"lr": 1e-4}, "sd": opt.state_dict()}, "epoch": 1000}, path)
    return path


def test_official_file_and_our_safetensors_load_unchanged(tmp_path, image):
    spec = lmliif_spec(hidden_dim=16, hidden_depth=6, hyper_hidden=(208,))
    net = build_lmliif(spec, seed=8)
    for path in (official_file(tmp_path, net, spec), save_safetensors(tmp_path / "m.safetensors", net, spec)):
        s, sd, _ = read_checkpoint(path)
        loaded = build(s, sd, path)
        assert type(loaded).__name__ == "LMLIIF"
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
        assert forward_diff(loaded, spec, image) < TOL


def test_broken_lmf_files_get_one_line_errors(tmp_path):
    spec = lmliif_spec()
    net = build_lmliif(spec)
    sd = net.state_dict()
    cases = {
        "missing-hypernet": ({k: v for k, v in sd.items() if not k.startswith("hypernet.")}, spec["args"],
                             "weights do not match the spec"),
        "wrong-render-width": (sd, {**spec["args"], "imnet_spec": {"name": "lmmlp", "args": {
            **spec["args"]["imnet_spec"]["args"], "hidden_dim": 9}}}, "weights do not match the spec"),
        "no-hypernet-spec": (sd, {k: v for k, v in spec["args"].items() if k != "hypernet_spec"},
                             "cannot build the model"),
    }
    for name, (state, args, message) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save({"model": {"name": "lmliif", "args": args, "sd": state}}, path)
        s, d, _ = read_checkpoint(path)
        with pytest.raises(CheckpointError) as err:
            build(s, d, path)
        assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value), name
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(official_file(tmp_path, net, spec).read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        read_checkpoint(truncated)


@pytest.mark.parametrize("kw", [dict(), dict(mod_input=False), dict(cell_decode=False), dict(feat_unfold=False),
                                dict(hidden_depth=1, hyper_hidden=()), dict(mod_scale=False, mod_shift=False)],
                         ids=["all-on", "no-mod-input", "no-cell", "no-unfold", "depth1", "unmodulated"])
def test_folded_products_equal_the_reference(image, kw):
    """The per-latent folded form (tile products, then cell products, then only the
    coordinate terms per sample) is the same function: gathered at each member's latent it
    equals the reference at arbitrary points."""
    spec = lmliif_spec(**kw)
    net = build_lmliif(spec, seed=9)
    h, w = image.shape[:2]
    cell = (0.17, 0.29)
    coord = points((h, w))
    with torch.no_grad():
        feat = net.encode(torch.from_numpy((image.transpose(2, 0, 1)[None] - 0.5) / 0.5))
        f = net.cell_products(net.tile_products(feat)[0].permute(1, 2, 0), (cell[0] * h, cell[1] * w))
    shifts, eps = ([(-1, -1), (-1, 1), (1, -1), (1, 1)], 1e-6) if spec["args"]["local_ensemble"] else ([(0, 0)], 0)
    preds, areas = [], []
    c = coord.astype(np.float64)
    for vy, vx in shifts:  # the member lookup written out here, from the paper
        iy = R.nearest(np.clip(c[:, 0] + vy / h + eps, -1 + 1e-6, 1 - 1e-6), h)
        ix = R.nearest(np.clip(c[:, 1] + vx / w + eps, -1 + 1e-6, 1 - 1e-6), w)
        ry = torch.from_numpy((c[:, 0] - R.pixel_centre(iy, h)) * h).float()
        rx = torch.from_numpy((c[:, 1] - R.pixel_centre(ix, w)) * w).float()
        with torch.no_grad():
            preds.append(net.render_folded(f[torch.from_numpy(iy), torch.from_numpy(ix)], ry, rx).double().numpy())
        areas.append(np.abs(ry.double().numpy() * rx.double().numpy()) + 1e-9)
    weights = areas[::-1] if len(shifts) == 4 else areas
    got = sum(p * (a / sum(weights))[:, None] for p, a in zip(preds, weights))
    ref = reference(net, spec, image, coord, cell)
    assert np.abs(ref).max() > 0.2 and ref.std() > 0.03  # not trivially small
    assert np.abs(got - ref).max() < TOL


# -- through the engine: EncodedField.render (tiled encoder, cached products, regular grids) --

def as_lm_model(net, spec, precision="fp32"):
    from napari_liif.engine import LiifModel

    return LiifModel(copy.deepcopy(net), spec, device="cpu", precision=precision)


def render_reference(net, spec, image, region, shape, cell, bilinear=False):
    coord = R.grid_coords(region, shape, image.shape[:2])
    return reference(net, spec, image, coord, cell, bilinear).reshape(shape + (-1,))


def render_diff(got01, ref) -> float:
    assert np.mean(np.abs(ref) > 1) < 0.1, "outputs mostly clamped: the comparison would be weak"
    return float(2 * np.abs(got01 - np.clip(ref * 0.5 + 0.5, 0, 1)).max())


@pytest.mark.parametrize("le,fu,cd,mi", SWITCHES, ids=["".join(n if on else "-" for n, on in zip("EUCM", s))
                                                        for s in SWITCHES])
def test_render_matches_reference_for_every_switch(image, le, fu, cd, mi):
    """The whole image on a 30 x 70 grid (scales 2.7 x 4.1, anisotropic) with the official
    cell 2 / output size, through tiled encoding (tiles of 5 latents) and small blocks."""
    spec = lmliif_spec(local_ensemble=le, feat_unfold=fu, cell_decode=cd, mod_input=mi, bilinear_residual=True)
    net = build_lmliif(spec, seed=11, out_gain=0.3)
    shape = (30, 70)
    field = as_lm_model(net, spec).encode(image, tile=5)
    field.block = 16
    got = field.render(None, shape)
    ref = render_reference(net, spec, image, (0, 0) + IMAGE_SHAPE, shape, (2 / 30, 2 / 70), bilinear=True)
    assert render_diff(got, ref) < TOL


@pytest.mark.parametrize("encoder", ["edsr-baseline", "edsr", "rdn"])
@pytest.mark.parametrize("region,shape,gain", [((1.5, 2.25, 9.0, 15.5), (23, 41), 0.35), ((0, 0, 11, 17), (5, 7), 0.15),
                                               ((3.3, 0.0, 4.1, 17.0), (9, 100), 0.35)],
                         ids=["subregion", "downscale", "thin-strip"])
def test_render_of_regions_matches_reference(image, encoder, region, shape, gain):
    spec = lmliif_spec(encoder)
    net = build_lmliif(spec, seed=12, out_gain=gain)  # large cells (downscaling) give large outputs
    got = as_lm_model(net, spec).encode(image, tile=6).render(region, shape)
    h, w = IMAGE_SHAPE
    cell = (2 * (region[2] - region[0]) / shape[0] / h, 2 * (region[3] - region[1]) / shape[1] / w)
    assert render_diff(got, render_reference(net, spec, image, region, shape, cell)) < TOL


@pytest.mark.parametrize("mode", ["on", "off", "clamp"])
def test_cell_modes_match_reference(image, mode):
    spec = lmliif_spec()
    net = build_lmliif(spec, seed=13)
    h, w = IMAGE_SHAPE
    # x6 x8: clamp changes the cell; even scales keep samples off the last latents' centres,
    # where the official weights are ratios of rounding noise (see test_reference.query_points)
    region, shape = (0, 0, h, w), (h * 6, w * 8)
    cell = {"on": (2 / shape[0], 2 / shape[1]), "off": (2 / h, 2 / w),
            "clamp": (2 / shape[0] * 6 / 4, 2 / shape[1] * 8 / 4)}[mode]
    got = as_lm_model(net, spec).encode(image).render(region, shape, cell=mode)
    assert render_diff(got, render_reference(net, spec, image, region, shape, cell)) < TOL


def counting_field(image, tile):
    """An LM-LIIF field whose encoder input pixels and latent-MLP latents are counted."""
    spec = lmliif_spec()
    model = as_lm_model(build_lmliif(spec, seed=14), spec)
    counts = {"encoder_px": 0, "latent_mlp": 0}
    model.net.encoder.register_forward_hook(
        lambda mod, inp, out: counts.__setitem__("encoder_px", counts["encoder_px"] + inp[0].shape[-2] * inp[0].shape[-1]))
    original = model.family.cell_products

    def cell_products(products, rel_cell):
        counts["latent_mlp"] += products.shape[0] * products.shape[1]
        return original(products, rel_cell)

    model.family.cell_products = cell_products
    return model.encode(image, tile=tile), counts


def test_pan_reuses_everything_and_zoom_reruns_only_the_latent_mlp():
    from napari_liif.latents import CELL_CHUNK

    img = np.random.default_rng(3).random((96, 96, 3)).astype(np.float32)
    field, counts = counting_field(img, tile=64)
    first = field.render((36, 36, 52, 52), (32, 32))  # zoom 2 on a 16 x 16 area
    assert counts["encoder_px"] > 0 and counts["latent_mlp"] > 0
    encoded, modulated = dict(counts), counts["latent_mlp"]
    # a pan by a quarter view, same zoom (same cell): nothing is recomputed
    panned = field.render((36, 40, 52, 56), (32, 32))
    assert counts == encoded
    # the overlapping samples are the same (up to float rounding of the shifted coordinates)
    assert np.abs(panned[:, :24] - first[:, 8:]).max() < 1e-5
    # a x1.25 zoom (new cell) reruns the latent MLP of the latents under the view (in chunks),
    # never the encoder, and not of the whole 64 x 64 tile
    field.render((38, 38, 50.8, 50.8), (32, 32))
    assert counts["encoder_px"] == encoded["encoder_px"]
    assert 0 < counts["latent_mlp"] - modulated <= CELL_CHUNK ** 2 < 64 * 64


def roughness(row: np.ndarray) -> float:
    """Largest second difference along a rendered row: a step (band) shows up as a spike."""
    return float(np.abs(np.diff(row.reshape(-1, row.shape[-1]).astype(np.float64), 2, axis=0)).max())


def test_bf16_render_does_not_band_a_deep_zoom(image):
    """x1024 across one latent: bf16 latent products, but the per-sample coordinates and
    render MLP in float32, so the bf16 render is as smooth as the fp32 one and close to it.
    Measured with the coordinates rounded to bf16 (the decoder before issue 18; bf16's step
    is 1/256 near 1 latent, every ~4 samples here): 42x the fp32 roughness, in steps."""
    spec = lmliif_spec()
    net = build_lmliif(spec, seed=21, out_gain=0.3)
    region, shape = (5.0, 8.0, 5.001, 9.0), (1, 1024)
    fp32 = as_lm_model(net, spec).encode(image).render(region, shape, cell="off")
    bf16 = as_lm_model(net, spec, "bf16").encode(image).render(region, shape, cell="off")
    assert np.ptp(fp32, axis=1).max() > 0.02  # the row does vary: a smooth ramp, not a constant
    assert roughness(bf16) <= 2 * roughness(fp32)
    assert np.abs(bf16 - fp32).max() < 0.01  # bf16 latent products: a small, smooth offset


def test_window_and_gathered_reads_both_match_reference(image, monkeypatch):
    """Zoom 4 over a region whose edges sit on latent centres: every run is 4 samples and
    reads consecutive latents, so blocks read their per-piece values as strided windows of the
    channels-first cell products. The whole image in 16-sample blocks: runs are cut at block
    edges and clamped at the border, so the values are gathered by index. Both agree with the
    float64 reference."""
    from napari_liif.models.lmliif_family import LmliifFamily

    paths = []
    gather = LmliifFamily._gather

    def spy(products, block, yr, xr, *rest):
        paths.append("window" if yr.start is not None and xr.start is not None else "gathered")
        assert products.stride(2) > products.stride(0) > products.stride(1)  # stored and assembled channels first
        return gather(products, block, yr, xr, *rest)

    monkeypatch.setattr(LmliifFamily, "_gather", staticmethod(spy))
    spec = lmliif_spec()
    net = build_lmliif(spec, seed=15, out_gain=0.3)
    h, w = IMAGE_SHAPE
    field = as_lm_model(net, spec).encode(image, tile=6)
    for region, block, path in [((1.5, 1.5, 9.5, 15.5), 24, "window"), ((0, 0, h, w), 16, "gathered")]:
        shape = (int(4 * (region[2] - region[0])), int(4 * (region[3] - region[1])))
        paths.clear()
        field.block = block
        got = field.render(region, shape)
        assert set(paths) == {path}, region
        cell = (2 / shape[0] * (region[2] - region[0]) / h, 2 / shape[1] * (region[3] - region[1]) / w)
        assert render_diff(got, render_reference(net, spec, image, region, shape, cell)) < TOL
