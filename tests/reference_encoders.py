"""EDSR and RDN forward passes written from the papers, in float64 NumPy.

This module imports nothing of napari_liif (nor torch): it takes an encoder's weights as a
dict of NumPy arrays, named as the official LIIF state dicts name them, and an input image
already on LIIF's [-1, 1] scale, (3, H, W). Convolutions are cross-correlations with "same"
zero padding, written as one matrix product over the k x k windows of the padded input.

EDSR (Lim et al., CVPR 2017 workshops), as LIIF uses it (``no_upsampling``, no mean shift)::

    x0 = head(I)
    x  = x0;  for each residual block:  x = x + res_scale * conv2(relu(conv1(x)))
    F  = x0 + conv_body(x)                                   (global skip)

RDN (Zhang et al., CVPR 2018), without the upsampling net::

    F_-1 = SFE1(I);  F_0 = SFE2(F_-1)
    each RDB d:  h_0 = F_{d-1};  h_c = [h_0, ..., relu(conv_c([h_0, ..., h_{c-1}]))]  (dense)
                 F_d = LFF_1x1([h_0, g_1, ..., g_C]) + F_{d-1}                     (local residual)
    F    = GFF_3x3(GFF_1x1([F_1, ..., F_D])) + F_-1                                (global residual)

The number of blocks and layers is read from the weight names, not from any configuration.
"""

from __future__ import annotations

import re

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: residual scaling of each EDSR variant as LIIF builds it, when its spec gives none
EDSR_RES_SCALE = {"edsr-baseline": 1.0, "edsr": 0.1}


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Cross-correlation of (Cin, H, W) with (Cout, Cin, k, k) weights, zero padding k // 2
    on every side ("same" size for odd k), plus bias: (Cout, H, W)."""
    cout, cin, kh, kw = weight.shape
    assert x.shape[0] == cin, (x.shape, weight.shape)
    _, h, w = x.shape
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    win = sliding_window_view(xp, (kh, kw), axis=(1, 2))  # (Cin, H, W, kh, kw)
    cols = win.transpose(1, 2, 0, 3, 4).reshape(h * w, cin * kh * kw)
    out = cols @ weight.reshape(cout, -1).T + bias
    return out.T.reshape(cout, h, w)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _conv(sd: dict, name: str, x: np.ndarray) -> np.ndarray:
    return conv2d(x, sd[name + ".weight"], sd[name + ".bias"])


def _count(sd: dict, pattern: str) -> int:
    """How many distinct integers fill the ``(\\d+)`` of ``pattern`` among the keys."""
    found = {int(m.group(1)) for k in sd for m in [re.fullmatch(pattern, k)] if m}
    assert found == set(range(len(found))), f"non-contiguous indices for {pattern}: {sorted(found)}"
    return len(found)


def edsr(sd: dict, x: np.ndarray, res_scale: float) -> np.ndarray:
    """EDSR features of a (3, H, W) input: (n_feats, H, W)."""
    n_blocks = _count(sd, r"body\.(\d+)\.body\.0\.weight")
    x0 = _conv(sd, "head.0", x)
    f = x0
    for b in range(n_blocks):
        r = _conv(sd, f"body.{b}.body.2", relu(_conv(sd, f"body.{b}.body.0", f)))
        f = f + res_scale * r
    return x0 + _conv(sd, f"body.{n_blocks}", f)


def rdn(sd: dict, x: np.ndarray) -> np.ndarray:
    """RDN features of a (3, H, W) input: (G0, H, W)."""
    n_blocks = _count(sd, r"RDBs\.(\d+)\.LFF\.weight")
    n_layers = _count(sd, r"RDBs\.0\.convs\.(\d+)\.conv\.0\.weight")
    f_minus1 = _conv(sd, "SFENet1", x)
    f = _conv(sd, "SFENet2", f_minus1)
    block_outputs = []
    for d in range(n_blocks):
        dense = [f]
        for c in range(n_layers):
            dense.append(relu(_conv(sd, f"RDBs.{d}.convs.{c}.conv.0", np.concatenate(dense))))
        f = _conv(sd, f"RDBs.{d}.LFF", np.concatenate(dense)) + f
        block_outputs.append(f)
    return _conv(sd, "GFF.1", _conv(sd, "GFF.0", np.concatenate(block_outputs))) + f_minus1


def encode(encoder_spec: dict, sd: dict, x: np.ndarray) -> np.ndarray:
    """Features of a (3, H, W) input on [-1, 1] by the encoder of an official ``encoder_spec``
    (``{'name', 'args'}``) with weights ``sd`` (name -> array): float64 (C, H, W)."""
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = np.asarray(x, np.float64)
    name, args = encoder_spec["name"], encoder_spec.get("args", {})
    if name in EDSR_RES_SCALE:
        return edsr(sd, x, float(args.get("res_scale", EDSR_RES_SCALE[name])))
    if name == "rdn":
        return rdn(sd, x)
    raise ValueError(f"no reference encoder for {name!r}")
