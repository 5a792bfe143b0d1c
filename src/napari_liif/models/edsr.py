"""EDSR encoders (Lim et al. 2017) as used by LIIF: no upsampling tail, no mean shift.

The official state dict holds ``sub_mean``/``add_mean`` 1x1 convolutions that the LIIF
forward pass never uses; they are kept here (frozen) only so official files load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class _MeanShift(nn.Conv2d):
    def __init__(self, sign: int):
        super().__init__(3, 3, 1)
        # built from constructors and in-place ops only: checkpoint.build shapes models on the meta
        # device, where ops without a meta kernel (torch.eye, a Python number times a tensor) run
        # torch's Python references, whose first call imports torch._dynamo and with it triton:
        # seconds of start-up, and a crash once napari's OpenGL driver has loaded its own LLVM
        # (napari_liif.loading); tests/test_thread_safe_start.py keeps every model free of them
        self.weight.data = torch.zeros(3, 3).fill_diagonal_(1.0).view(3, 3, 1, 1)
        self.bias.data = torch.tensor([sign * m for m in (0.4488, 0.4371, 0.4040)])
        self.requires_grad_(False)


class ResBlock(nn.Module):
    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(_conv(n_feats, n_feats), nn.ReLU(True), _conv(n_feats, n_feats))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class EDSR(nn.Module):
    """EDSR feature extractor returning ``n_feats`` channels at input resolution."""

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 n_colors: int = 3, no_upsampling: bool = True, **_ignored):
        super().__init__()
        if not no_upsampling:
            raise ValueError("LIIF encoders must have no_upsampling=True")
        self.sub_mean = _MeanShift(-1)
        self.add_mean = _MeanShift(+1)
        self.head = nn.Sequential(_conv(n_colors, n_feats))
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
                                  _conv(n_feats, n_feats))
        self.out_dim = n_feats
        #: pixels of context each output latent depends on, per side (one per 3x3 conv)
        self.receptive_radius = 2 * n_resblocks + 2

    def forward(self, x):
        x = self.head(x)
        return x + self.body(x)


@register("edsr-baseline")
def edsr_baseline(n_resblocks=16, n_feats=64, res_scale=1.0, **kw):
    return EDSR(n_resblocks, n_feats, res_scale, **kw)


@register("edsr")
def edsr(n_resblocks=32, n_feats=256, res_scale=0.1, **kw):
    return EDSR(n_resblocks, n_feats, res_scale, **kw)
