"""Tiny random LIIF models for the batch, dask and widget tests (not the bundled default)."""

from __future__ import annotations

import copy

import torch

from napari_liif import models
from napari_liif.checkpoint import save_safetensors
from napari_liif.engine import LiifModel


def tiny_spec(*, bilinear_residual: bool = False, n_resblocks: int = 2, n_feats: int = 16) -> dict:
    """EDSR-baseline encoder with two residual blocks (receptive radius 6), 32-wide decoder."""
    args = {
        "encoder_spec": {"name": "edsr-baseline",
                         "args": {"no_upsampling": True, "n_resblocks": n_resblocks, "n_feats": n_feats}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [32, 32]}},
    }
    if bilinear_residual:
        args["bilinear_residual"] = True
    return {"name": "liif", "args": args}


def tiny_model(seed: int = 3, **kw) -> LiifModel:
    spec = tiny_spec(**kw)
    torch.manual_seed(seed)
    net = models.make(spec).eval()
    return LiifModel(copy.deepcopy(net), spec, device="cpu", name=f"tiny-{seed}")


def tiny_checkpoint(path, seed: int = 3, **kw):
    """Write ``tiny_model(seed)`` as a napari-liif safetensors file; returns the path."""
    m = tiny_model(seed, **kw)
    return save_safetensors(path, m.net, m.spec)
