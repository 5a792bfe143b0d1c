"""Tiny LM-LIIF networks for the tests, in the official spec layout."""

from __future__ import annotations

import copy

import torch

from conftest import ENCODER_SPECS
from napari_liif import models


def lmliif_spec(encoder: str = "edsr-baseline", *, hidden_dim: int = 8, hidden_depth: int = 3,
                hyper_hidden=(32,), local_ensemble=True, feat_unfold=True, cell_decode=True,
                mod_input=True, mod_scale=True, mod_shift=True, bilinear_residual=False) -> dict:
    """An official-style LM-LIIF spec around one of the tests' small encoders."""
    args = {
        "encoder_spec": copy.deepcopy(ENCODER_SPECS[encoder]),
        "imnet_spec": {"name": "lmmlp", "args": {"out_dim": 3, "hidden_dim": hidden_dim,
                                                 "hidden_depth": hidden_depth, "mod_scale": mod_scale,
                                                 "mod_shift": mod_shift}},
        # out_dim deliberately wrong: the model sets the latent MLP's real size, as the official code does
        "hypernet_spec": {"name": "mlp", "args": {"out_dim": 1, "hidden_list": list(hyper_hidden)}},
        "local_ensemble": local_ensemble, "feat_unfold": feat_unfold, "cell_decode": cell_decode,
        "mod_input": mod_input,
    }
    if bilinear_residual:
        args["bilinear_residual"] = True
    return {"name": "lmliif", "args": args}


def build_lmliif(spec: dict, seed: int = 0, out_gain: float = 0.6) -> torch.nn.Module:
    """Random network of ``spec`` with both MLPs re-initialised so that outputs spread over
    about [-1, 1] and modulations are O(0.3): a 1e-5 comparison is then a sharp one."""
    torch.manual_seed(seed)
    net = models.make(spec).eval()
    with torch.no_grad():
        for mlp, last_gain in ((net.hypernet, 0.3), (net.imnet, out_gain)):
            lins = mlp.linears
            for i, lin in enumerate(lins):
                gain = 2 ** 0.5 if i < len(lins) - 1 else last_gain
                lin.weight.normal_(0.0, gain / lin.weight.shape[1] ** 0.5)
                lin.bias.uniform_(-0.1, 0.1)
    return net
