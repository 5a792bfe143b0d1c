"""Tiny random LIIF models for the batch, dask and widget tests (not the bundled default), with
realistic weights (``helpers_models.realistic_init``), and the issue-19 hyperstack."""

from __future__ import annotations

import copy

import torch

from helpers_models import realistic_init

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
    """A random ``tiny_spec(**kw)`` model; its weights come from ``helpers_models.realistic_init``
    (seeded), so that its outputs spread like images do and comparisons with it can fail."""
    spec = tiny_spec(**kw)
    torch.manual_seed(seed)
    net = realistic_init(models.make(spec).eval(), seed)
    return LiifModel(copy.deepcopy(net), spec, device="cpu", name=f"tiny-{seed}")


def tiny_checkpoint(path, seed: int = 3, **kw):
    """Write ``tiny_model(seed)`` as a napari-liif safetensors file; returns the path."""
    m = tiny_model(seed, **kw)
    return save_safetensors(path, m.net, m.spec)


#: the issue-19 hyperstack: a bright nuclear channel, a filament channel with one hot pixel, a dim
#: puncta channel (ranges as measured on the real stack)
CHANNEL_RANGES = ((268, 7976), (138, 3283), (93, 214))
HOT = (2, 1, 5, 6)  # (z, c, y, x) of the hot pixel
PIXEL_UM, Z_UM = 0.1625, 0.5


def hyperstack(seed: int = 0, shape=(5, 16, 18)):
    """A ZCYX uint16 stack (z 5, c 3) with channels of very different ranges and one hot pixel."""
    import numpy as np

    rng = np.random.default_rng(seed)
    z, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.empty((z, len(CHANNEL_RANGES), h, w), np.uint16)
    for c, (lo, hi) in enumerate(CHANNEL_RANGES):
        smooth = 0.5 + 0.5 * np.sin(xx / (2.0 + c) + yy / 3.0)  # structure, not only noise
        v = lo + (hi - lo) * (0.7 * smooth + 0.3 * rng.random((z, h, w)))
        a[:, c] = np.clip(np.rint(v), lo, hi)
        a[:, c, 0, 0], a[:, c, -1, -1] = lo, hi  # each channel spans its range exactly
    a[HOT] = 65535
    return a


def write_hyperstack(path, a, *, ome: bool = False, names=("DAPI", "actin", "puncta")):
    """``a`` as an ImageJ hyperstack (axes ZCYX, 0.1625 um pixels, 0.5 um z spacing) or, with
    ``ome``, as an OME-TIFF with the same calibration and channel names."""
    import tifffile

    res = (1 / PIXEL_UM, 1 / PIXEL_UM)
    if ome:
        meta = {"axes": "ZCYX", "PhysicalSizeX": PIXEL_UM, "PhysicalSizeY": PIXEL_UM, "PhysicalSizeZ": Z_UM,
                "PhysicalSizeXUnit": "\u00b5m", "PhysicalSizeYUnit": "\u00b5m", "PhysicalSizeZUnit": "\u00b5m",
                "Channel": {"Name": list(names)}}
        tifffile.imwrite(path, a, ome=True, photometric="minisblack", metadata=meta)
    else:
        tifffile.imwrite(path, a, imagej=True, resolution=res,
                         metadata={"axes": "ZCYX", "spacing": Z_UM, "unit": "um"})
    return path
