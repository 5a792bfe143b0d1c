"""The encoders (EDSR-baseline, EDSR, RDN) equal the independent float64 forward passes of
``reference_encoders``, written from the papers, within 1e-5 of the output scale in fp32."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import reference_encoders as E
import reference_liif as R
from conftest import ENCODER_SPECS
from helpers_models import realistic_init
from napari_liif import models

pytestmark = pytest.mark.usefixtures("single_thread", "tiny_rdn")

TOL = 1e-5
IMAGE_SHAPE = (13, 19)

#: a few blocks each, with non-default widths and residual scaling
CASES = {
    "edsr-baseline": ENCODER_SPECS["edsr-baseline"],
    "edsr": ENCODER_SPECS["edsr"],
    "edsr-res0.3": {"name": "edsr-baseline", "args": {"n_resblocks": 3, "n_feats": 12, "res_scale": 0.3,
                                                      "no_upsampling": True}},
    "rdn": ENCODER_SPECS["rdn"],
    "rdn-k5": {"name": "rdn", "args": {"RDNconfig": "T", "G0": 8, "RDNkSize": 5, "no_upsampling": True}},
}


@pytest.fixture(scope="module")
def inp():
    """A non-square input on LIIF's [-1, 1] scale, (3, H, W)."""
    return R.to_input(np.random.default_rng(11).random(IMAGE_SHAPE + (3,)))


def encoder_pair(spec: dict, seed: int = 0):
    """The model's encoder (fp32, realistic random weights) and its weights as arrays."""
    torch.manual_seed(seed)
    enc = realistic_init(models.make(copy.deepcopy(spec)).eval(), seed)
    return enc, R.encoder_weights(enc)


def ours(enc: torch.nn.Module, inp: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return enc(torch.from_numpy(inp).float()[None])[0].double().numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_encoder_matches_paper_reference(inp, case):
    spec = CASES[case]
    enc, sd = encoder_pair(spec)
    ref = E.encode(spec, sd, inp)
    assert ref.shape == (enc.out_dim,) + IMAGE_SHAPE
    scale = np.abs(ref).max()
    assert 0.5 < ref.std() and scale < 50, "features should have image-like magnitudes, not tiny ones"
    assert np.abs(ours(enc, inp) - ref).max() / scale < TOL


@pytest.mark.parametrize("case", ["edsr", "rdn"])
def test_comparison_can_fail(inp, case):
    """Sharp: a wrong residual scale (EDSR) or one dense layer's weights nudged by 1 % (RDN)
    moves the reference by far more than the tolerance."""
    spec = CASES[case]
    enc, sd = encoder_pair(spec)
    got = ours(enc, inp)
    if case == "edsr":
        wrong = E.edsr(sd, inp, res_scale=1.0)  # EDSR's own default is 0.1
    else:
        sd = dict(sd, **{"RDBs.1.convs.0.conv.0.weight": sd["RDBs.1.convs.0.conv.0.weight"] * 1.01})
        wrong = E.encode(spec, sd, inp)
    assert np.abs(got - wrong).max() / np.abs(wrong).max() > 100 * TOL


def test_conv2d_by_hand():
    """The reference convolution itself, against values worked out by hand: a cross-correlation
    (the kernel is not flipped) with zero padding, the kernel's top-left tap reading the pixel
    up and to the left."""
    x = np.arange(1.0, 13.0).reshape(1, 3, 4)  # [[1 2 3 4] [5 6 7 8] [9 10 11 12]]
    w = np.zeros((2, 1, 3, 3))
    w[0, 0, 0, 0] = 1.0       # output 0: the up-left neighbour
    w[1, 0, 1, :] = 1.0       # output 1: sum of the row neighbourhood (left, self, right)
    out = E.conv2d(x, w, np.array([0.0, 0.5]))
    np.testing.assert_array_equal(out[0], [[0, 0, 0, 0], [0, 1, 2, 3], [0, 5, 6, 7]])
    np.testing.assert_array_equal(out[1], np.array([[3, 6, 9, 7], [11, 18, 21, 15], [19, 30, 33, 23]]) + 0.5)


def test_whole_encoder_receptive_radius_from_reference(inp):
    """A change to one input pixel moves the reference latents exactly within the encoder's
    declared receptive radius (one pixel per 3x3 convolution), independently of our model."""
    spec = CASES["edsr-baseline"]
    enc, sd = encoder_pair(spec)
    x = inp.copy()
    x[:, 6, 9] += 1.0
    moved = np.abs(E.encode(spec, sd, x) - E.encode(spec, sd, inp)).max(0) > 1e-12
    ys, xs = np.nonzero(moved)
    r = enc.receptive_radius
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (max(6 - r, 0), min(6 + r, 12), max(9 - r, 0), min(9 + r, 18))
