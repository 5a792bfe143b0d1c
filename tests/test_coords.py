"""Coordinates, nearest-latent lookup, ensemble weights and cell sizes, against values worked
out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_liif import models
from napari_liif.engine import LiifModel
from napari_liif.field import EncodedField
from napari_liif.models.liif import axis_centres, nearest_latent

pytestmark = pytest.mark.usefixtures("single_thread")


# -- pixel centres -------------------------------------------------------------------------

def test_axis_centres_hand_values():
    assert axis_centres(4).tolist() == [-0.75, -0.25, 0.25, 0.75]
    assert axis_centres(2, 0.0, 1.0).tolist() == [0.25, 0.75]
    assert axis_centres(1).tolist() == [0.0]
    np.testing.assert_allclose(axis_centres(3).numpy(), [-2 / 3, 0.0, 2 / 3], atol=1e-7)
    # a sub-range: 5 samples over [-0.5, 0.5] -> centres -0.4, -0.2, 0, 0.2, 0.4
    np.testing.assert_allclose(axis_centres(5, -0.5, 0.5).numpy(), [-0.4, -0.2, 0.0, 0.2, 0.4], atol=1e-7)


@pytest.mark.parametrize("n", [1, 7, 13, 19, 48, 1000])
def test_axis_centres_bitwise_official_make_coord(n):
    """The official ``make_coord`` writes r = 1 / n, centres = -1 + r + (2 r) * arange(n).float().
    Matching it bit for bit matters where the official weights are ill-conditioned (queries on
    the last latent centre); ``render`` of the whole image relies on it."""
    r = (1 - (-1)) / (2 * n)
    official = -1 + r + (2 * r) * torch.arange(n).float()
    assert torch.equal(axis_centres(n), official)
    assert axis_centres(n).dtype == torch.float32


# -- nearest latent ------------------------------------------------------------------------

def test_nearest_latent_hand_values():
    # n = 4 latents with centres -0.75, -0.25, 0.25, 0.75 and edges at -0.5, 0, 0.5
    c = torch.tensor([-1.0, -0.6, -0.4, 0.1, 0.49, 0.51, 1.0])
    assert nearest_latent(c, 4, 0, 0.0).tolist() == [0, 0, 1, 2, 2, 3, 3]
    # shifted down by half a latent (1/n = 0.25): -1.25, -0.85, -0.65, -0.15, 0.24, 0.26, 0.75
    assert nearest_latent(c, 4, -1, 1e-6).tolist() == [0, 0, 0, 1, 2, 2, 3]
    # shifted up: -0.75, -0.35, -0.15, 0.35, 0.74, 0.76, 1.25 (clamped to 1 - 1e-6)
    assert nearest_latent(c, 4, 1, 1e-6).tolist() == [0, 1, 1, 2, 3, 3, 3]


def test_nearest_latent_eps_breaks_ties_upwards():
    """A query on a latent centre, shifted by -1/n, lands exactly on the edge below it: the
    1e-6 push makes both the official code and ours pick the latent itself."""
    centres = axis_centres(4)
    assert nearest_latent(centres, 4, -1, 1e-6).tolist() == [0, 1, 2, 3]
    assert nearest_latent(centres, 4, 1, 1e-6).tolist() == [1, 2, 3, 3]


# -- ensemble weights ----------------------------------------------------------------------
#
# A 4 x 4 latent grid (centres -0.75, -0.25, 0.25, 0.75 on both axes) and the query
# (row, col) = (0.1, -0.3), i.e. input pixel position (2.2, 1.4) in pixel-edge units.
#   rows: shift -1 -> latent 1 (centre -0.25), rel = (0.1 + 0.25) * 4 =  1.4
#         shift +1 -> latent 2 (centre  0.25), rel = (0.1 - 0.25) * 4 = -0.6
#   cols: shift -1 -> latent 0 (centre -0.75), rel = (-0.3 + 0.75) * 4 = 1.8
#         shift +1 -> latent 1 (centre -0.25), rel = (-0.3 + 0.25) * 4 = -0.2
#   areas (order (-1,-1), (-1,+1), (+1,-1), (+1,+1)): 2.52, 0.28, 1.08, 0.12; total 4.0
#   each weighted by the opposite area: 0.12 / 4, 1.08 / 4, 0.28 / 4, 2.52 / 4
#   = 0.03 (latent (1,0)), 0.27 (1,1), 0.07 (2,0), 0.63 (2,1): exactly bilinear interpolation
#   (0.7 of the way from row latent 1 to 2, 0.9 from column latent 0 to 1).
QUERY = (0.1, -0.3)
LATENTS = [(1, 0), (1, 1), (2, 0), (2, 1)]
WEIGHTS = [0.03, 0.27, 0.07, 0.63]


def _indicator_net(out_dim: int):
    """A LIIF whose decoder returns, for a first-layer pre-activation h, ReLU(h) itself: with
    one-hot latents it reports the weight the ensemble gives to each latent. The coordinate
    weights of the first layer are zeroed so the relative coordinate does not enter."""
    spec = {"name": "liif", "args": {
        "encoder_spec": {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 4}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": out_dim, "hidden_list": [out_dim]}},
        "local_ensemble": True, "feat_unfold": False, "cell_decode": False}}
    net = models.make(spec).eval()
    with torch.no_grad():
        first, last = net.imnet.linears
        first.weight.zero_()
        last.weight.copy_(torch.eye(out_dim))
        last.bias.zero_()
    return net


def _one_hot_latents(n_channels: int) -> torch.Tensor:
    proj = torch.zeros(1, n_channels, 4, 4)
    for k, (y, x) in enumerate(LATENTS[:n_channels]):
        proj[0, k, y, x] = 1.0
    return proj


def test_ensemble_weights_hand_worked_decode():
    net = _indicator_net(4)
    with torch.no_grad():
        w = net.decode(_one_hot_latents(4), torch.tensor([[QUERY]]))[0, 0]
    np.testing.assert_allclose(w.numpy(), WEIGHTS, atol=1e-6)


def test_ensemble_weights_hand_worked_render():
    """The same weights through ``EncodedField.render`` (its own regular-grid decoder): a
    1 x 1 render of a tiny region centred on the query, the projected latents replaced by
    one-hot ones (the fourth weight is 1 minus the other three)."""
    net = _indicator_net(3)
    net.project = lambda feat: _one_hot_latents(3).to(feat.dtype)  # (1, hidden, 4, 4)
    field = LiifModel(net, {}, device="cpu").encode(np.zeros((4, 4, 3), np.float32))
    y, x = 2.2, 1.4  # the query in pixel-edge units: (0.1 + 1) / 2 * 4, (-0.3 + 1) / 2 * 4
    out = field.render((y - 0.01, x - 0.01, y + 0.01, x + 0.01), (1, 1))[0, 0]
    np.testing.assert_allclose(out * 2 - 1, WEIGHTS[:3], atol=1e-6)  # render maps v -> v/2 + 1/2
    assert abs(1 - (out * 2 - 1).sum() - WEIGHTS[3]) < 1e-6


def test_without_ensemble_nearest_latent_only():
    spec = {"name": "liif", "args": {
        "encoder_spec": {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 4}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 4, "hidden_list": [4]}},
        "local_ensemble": False, "feat_unfold": False, "cell_decode": False}}
    net = models.make(spec).eval()
    with torch.no_grad():
        net.imnet.linears[0].weight.zero_()
        net.imnet.linears[1].weight.copy_(torch.eye(4))
        net.imnet.linears[1].bias.zero_()
        # (0.1, -0.3) is in latent (2, 1): pixel position (2.2, 1.4)
        w = net.decode(_one_hot_latents(4), torch.tensor([[QUERY]]))[0, 0]
    assert w.tolist() == [0.0, 0.0, 0.0, 1.0]


# -- cell sizes ----------------------------------------------------------------------------

@pytest.fixture
def field20x30():
    return EncodedField(model=None, source=None, shape=(20, 30))


def test_cell_on_is_the_output_pixel(field20x30):
    # whole image on 50 x 60: cell = (2 / 50, 2 / 60), as the official demo computes it
    np.testing.assert_allclose(field20x30.cell((0, 0, 20, 30), (50, 60), "on"), (0.04, 1 / 30))
    # a 2 x 4 pixel region on 8 x 8 samples: steps 0.25 and 0.5 input pixels,
    # cell = 2 * step / n = (0.025, 1 / 30)
    np.testing.assert_allclose(field20x30.cell((5, 5, 7, 9), (8, 8), "on"), (0.025, 1 / 30))


def test_cell_off_is_the_input_pixel(field20x30):
    np.testing.assert_allclose(field20x30.cell((0, 0, 20, 30), (50, 60), "off"), (0.1, 2 / 30))
    np.testing.assert_allclose(field20x30.cell((5, 5, 7, 9), (800, 8), "off"), (0.1, 2 / 30))


def test_cell_clamp_stops_at_x4(field20x30):
    # scales 2.5 and 2: below x4, clamp changes nothing
    np.testing.assert_allclose(field20x30.cell((0, 0, 20, 30), (50, 60), "clamp"), (0.04, 1 / 30))
    # rows x10 (step 0.1): 2 * 0.1 / 20 = 0.01, times max(10 / 4, 1) = 2.5 -> 0.025 = 2 / (4 * 20);
    # columns x2 (step 0.5): 1 / 30 unchanged
    np.testing.assert_allclose(field20x30.cell((0, 0, 20, 30), (200, 60), "clamp"), (0.025, 1 / 30))
    # exactly x4: unchanged, 2 / 80 and 2 / 120
    np.testing.assert_allclose(field20x30.cell((0, 0, 20, 30), (80, 120), "clamp"), (0.025, 2 / 120))


def test_cell_bad_mode(field20x30):
    with pytest.raises(ValueError, match="'auto'.*on, off, clamp"):
        field20x30.cell((0, 0, 20, 30), (50, 60), "auto")
