"""Exactness: the fast engine equals the slow reference of ``reference_liif`` in fp32.

Issue 2, section 5: within 1e-5 on LIIF's [-1, 1] scale, for every combination of
``local_ensemble``, ``feat_unfold`` and ``cell_decode``, for EDSR-baseline, EDSR and RDN,
on a non-square image at non-integer, anisotropic scales. Both entry points are checked:
``EncodedField.render`` (tiled encoding, projected latents, regular-grid decoding) and
``LIIF.forward`` (the official ``model(inp, coord, cell)`` call, arbitrary coordinates).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import reference_liif as R
from conftest import ENCODERS

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = 1e-5
IMAGE_SHAPE = (13, 19)
OUT_SHAPE = (30, 70)  # scale 2.31 x 3.68
COMBOS = list(itertools.product([False, True], repeat=3))
COMBO_IDS = ["".join(n if on else "-" for n, on in zip("EUC", c)) for c in COMBOS]  # Ensemble Unfold Cell


@pytest.fixture(scope="module")
def image():
    """A non-square RGB image in [0.2, 0.8] (so that the bilinear residual rarely clips)."""
    return (0.2 + 0.6 * np.random.default_rng(7).random(IMAGE_SHAPE + (3,))).astype(np.float32)


def render_diff(got01: np.ndarray, ref: np.ndarray) -> float:
    """Largest difference on the [-1, 1] scale between a render (in [0, 1], clamped) and the
    reference (on [-1, 1], unclamped); also checks that clamping hides little."""
    assert got01.shape == ref.shape
    assert np.mean(np.abs(ref) > 1) < 0.1, "outputs mostly clamped: the comparison would be weak"
    return float(2 * np.abs(got01 - np.clip(ref * 0.5 + 0.5, 0, 1)).max())


def query_points(shape, n_random=300, seed=3) -> np.ndarray:
    """Random coordinates, latent centres (where the ensemble shift lands exactly on a latent
    edge, the case the 1e-6 push exists for) and the four corners of [-1, 1]^2.

    The centres of the last row and column are left out: there the shifted queries of both
    sides clamp onto the same latent, all four areas are |0 * x| + 1e-9, and the official
    weights become ratios of float32 rounding noise (up to 0.2 apart from exact arithmetic).
    The engine reproduces the official float32 coordinates bit for bit (see test_coords), so
    it follows the official code there, but no exact-arithmetic reference can.
    """
    h, w = shape
    rnd = np.random.default_rng(seed).uniform(-1, 1, (n_random, 2))
    cy, cx = np.meshgrid(R.pixel_centre(np.arange(h - 1), h), R.pixel_centre(np.arange(w - 1), w), indexing="ij")
    centres = np.stack([cy.ravel(), cx.ravel()], 1)
    corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], np.float64)
    return np.concatenate([rnd, centres, corners]).astype(np.float32)


def check_forward(net, image, *, switches, z, bilinear=False, seed=3) -> float:
    """``net(inp, coord, cell)`` against the reference at ``query_points`` with random,
    per-query anisotropic cells; returns the largest difference."""
    coord = query_points(image.shape[:2], seed=seed)
    cell = np.random.default_rng(seed + 1).uniform(0.01, 0.4, coord.shape).astype(np.float32)
    inp = torch.from_numpy((image.transpose(2, 0, 1)[None] - 0.5) / 0.5)
    with torch.no_grad():
        got = net(inp, torch.from_numpy(coord)[None], torch.from_numpy(cell)[None])[0].double().numpy()
    ref = R.query(z, R.mlp_weights(net.imnet), coord.astype(np.float64), cell.astype(np.float64),
                  image=R.to_input(image) if bilinear else None, **switches)
    assert np.abs(ref).max() > 0.3  # outputs are not trivially small
    return float(np.abs(got - ref).max())


def reference_render(net, image, region, shape, cell, *, switches, z, bilinear=False):
    """The reference evaluated where ``render(region, shape)`` samples, with a constant cell;
    ``z`` the reference latents (``R.encode_net``)."""
    coord = R.grid_coords(region, shape, image.shape[:2])
    ref = R.query(z, R.mlp_weights(net.imnet), coord, np.tile(cell, (len(coord), 1)),
                  image=R.to_input(image) if bilinear else None, **switches)
    return ref.reshape(shape + (-1,))


def switches_of(le, fu, cd):
    return dict(local_ensemble=le, feat_unfold=fu, cell_decode=cd)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("le,fu,cd", COMBOS, ids=COMBO_IDS)
def test_every_switch_combination_matches_reference(make_liif, as_model, image, encoder, le, fu, cd):
    sw = switches_of(le, fu, cd)
    net, spec = make_liif(encoder, **sw)
    z = R.encode_net(net, spec, image)
    # the whole image on a 30 x 70 grid: the official demo's convention, cell = 2 / output size
    got = as_model(net, spec).encode(image).render(None, OUT_SHAPE)
    ref = reference_render(net, image, (0, 0) + IMAGE_SHAPE, OUT_SHAPE, [2 / OUT_SHAPE[0], 2 / OUT_SHAPE[1]],
                           switches=sw, z=z)
    assert render_diff(got, ref) < TOL
    # the official model(inp, coord, cell) call at arbitrary points
    assert check_forward(net, image, switches=sw, z=z) < TOL


REGIONS = [
    ((2.3, 4.1, 9.7, 15.2), (17, 29)),    # inside the image, scales 2.30 x 2.61
    ((-0.7, -1.2, 4.4, 6.9), (9, 11)),     # over the top-left border: clamped lookups
    ((9.25, 13.5, 13.0, 19.0), (7, 40)),   # bottom-right corner, anisotropic 1.87 x 7.27
]


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("region,shape", REGIONS, ids=["inside", "top-left", "bottom-right"])
def test_region_render_matches_reference(make_liif, as_model, image, encoder, region, shape):
    sw = switches_of(True, True, True)
    net, spec = make_liif(encoder, **sw)
    got = as_model(net, spec).encode(image, tile=8).render(region, shape)
    h, w = IMAGE_SHAPE
    step = ((region[2] - region[0]) / shape[0], (region[3] - region[1]) / shape[1])
    cell = [2 * step[0] / h, 2 * step[1] / w]  # one output sample, in [-1, 1] units
    z = R.encode_net(net, spec, image)
    assert render_diff(got, reference_render(net, image, region, shape, cell, switches=sw, z=z)) < TOL


@pytest.mark.parametrize("mode", ["on", "off", "clamp"])
def test_cell_modes_match_reference(make_liif, as_model, image, mode):
    """A zoom of x10 (rows) by x8 (columns): the three cell modes feed the decoder the cell of
    the output grid, of the input grid, and of a x4 grid."""
    sw = switches_of(True, True, True)
    net, spec = make_liif("edsr-baseline", **sw)
    region, shape = (3.0, 4.0, 5.0, 7.0), (20, 24)
    (h, w), scale = IMAGE_SHAPE, (10.0, 8.0)
    cell = {"on": [2 / (h * scale[0]), 2 / (w * scale[1])],
            "off": [2 / h, 2 / w],
            "clamp": [2 / (h * 4), 2 / (w * 4)]}[mode]
    got = as_model(net, spec).encode(image).render(region, shape, cell=mode)
    z = R.encode_net(net, spec, image)
    ref = reference_render(net, image, region, shape, cell, switches=sw, z=z)
    assert render_diff(got, ref) < TOL
    # and the modes really differ from each other
    other = reference_render(net, image, region, shape, [2 / h, 2 / w] if mode != "off" else
                             [2 / (h * 10), 2 / (w * 8)], switches=sw, z=z)
    assert np.abs(ref - other).max() > 1e-3


@pytest.mark.parametrize("le,fu,cd", [(True, True, True), (False, False, False)], ids=["EUC", "---"])
def test_bilinear_residual_matches_reference(make_liif, as_model, image, le, fu, cd):
    sw = switches_of(le, fu, cd)
    net, spec = make_liif("edsr-baseline", bilinear_residual=True, **sw)
    z = R.encode_net(net, spec, image)
    model = as_model(net, spec)
    for region, shape in [((0, 0) + IMAGE_SHAPE, OUT_SHAPE), REGIONS[1]]:
        got = model.encode(image, tile=8).render(region, shape)
        step = ((region[2] - region[0]) / shape[0], (region[3] - region[1]) / shape[1])
        cell = [2 * step[0] / IMAGE_SHAPE[0], 2 * step[1] / IMAGE_SHAPE[1]]
        ref = reference_render(net, image, region, shape, cell, switches=sw, bilinear=True, z=z)
        assert render_diff(got, ref) < TOL
        # the residual is really there: without it the reference is far off
        plain = reference_render(net, image, region, shape, cell, switches=sw, z=z)
        assert np.abs(ref - plain).max() > 0.1
    assert check_forward(net, image, switches=sw, bilinear=True, z=z) < TOL


@pytest.mark.parametrize("encoder,args", [("edsr-baseline", {"n_resblocks": 16}), ("rdn-A", {})],
                         ids=["edsr-baseline-16x64", "rdn-A"])
def test_official_size_models_match_reference(make_liif, as_model, image, encoder, args):
    """The published architecture sizes: EDSR-baseline (16 blocks, 64 features) and an RDN of
    the official configuration A, with the official 4 x 256 decoder."""
    sw = switches_of(True, True, True)
    net, spec = make_liif(encoder, hidden=(256, 256, 256, 256), encoder_args=args, **sw)
    z = R.encode_net(net, spec, image)
    got = as_model(net, spec).encode(image).render(REGIONS[0][0], REGIONS[0][1])
    region, shape = REGIONS[0]
    cell = [2 * (region[2] - region[0]) / shape[0] / IMAGE_SHAPE[0],
            2 * (region[3] - region[1]) / shape[1] / IMAGE_SHAPE[1]]
    assert render_diff(got, reference_render(net, image, region, shape, cell, switches=sw, z=z)) < TOL
    if encoder != "rdn-A":  # (the forward pass would run this slow encoder once more)
        assert check_forward(net, image, switches=sw, z=z) < TOL


def test_comparison_can_fail(make_liif, as_model, image):
    """The comparison is sharp: a reference that weights each ensemble member by its own area
    instead of the opposite one is caught by three orders of magnitude above the tolerance."""
    sw = switches_of(True, True, True)
    net, spec = make_liif("edsr-baseline", **sw)
    z = R.encode_net(net, spec, image)
    got = as_model(net, spec).encode(image).render(None, OUT_SHAPE)
    cell = np.tile([2 / OUT_SHAPE[0], 2 / OUT_SHAPE[1]], (OUT_SHAPE[0] * OUT_SHAPE[1], 1))
    coord = R.grid_coords((0, 0) + IMAGE_SHAPE, OUT_SHAPE, IMAGE_SHAPE)
    wrong = R.query(z, R.mlp_weights(net.imnet), coord, cell, opposite_area=False, **sw)
    assert render_diff(got, wrong.reshape(OUT_SHAPE + (3,))) > 1e-2
