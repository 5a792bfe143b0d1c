"""RDN encoder (Zhang et al. 2018) as used by LIIF: no upsampling tail."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register

_CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}  # blocks D, conv layers C, growth G


class RDB_Conv(nn.Module):
    def __init__(self, cin: int, growth: int, k: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, growth, k, padding=(k - 1) // 2), nn.ReLU())

    def forward(self, x):
        return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):
    def __init__(self, g0: int, growth: int, n_layers: int, k: int):
        super().__init__()
        self.convs = nn.Sequential(*[RDB_Conv(g0 + i * growth, growth, k) for i in range(n_layers)])
        self.LFF = nn.Conv2d(g0 + n_layers * growth, g0, 1)

    def forward(self, x):
        return self.LFF(self.convs(x)) + x


@register("rdn")
class RDN(nn.Module):
    def __init__(self, G0: int = 64, RDNkSize: int = 3, RDNconfig: str = "B", n_colors: int = 3,
                 no_upsampling: bool = True, **_ignored):
        super().__init__()
        if not no_upsampling:
            raise ValueError("LIIF encoders must have no_upsampling=True")
        if RDNconfig not in _CONFIGS:
            raise ValueError(f"RDNconfig must be one of {sorted(_CONFIGS)}, got {RDNconfig!r}")
        d, c, g = _CONFIGS[RDNconfig]
        k = RDNkSize
        self.SFENet1 = nn.Conv2d(n_colors, G0, k, padding=(k - 1) // 2)
        self.SFENet2 = nn.Conv2d(G0, G0, k, padding=(k - 1) // 2)
        self.RDBs = nn.ModuleList([RDB(G0, g, c, k) for _ in range(d)])
        self.GFF = nn.Sequential(nn.Conv2d(d * G0, G0, 1), nn.Conv2d(G0, G0, k, padding=(k - 1) // 2))
        self.out_dim = G0
        self.receptive_radius = (k // 2) * (3 + d * c)

    def forward(self, x):
        f1 = self.SFENet1(x)
        x = self.SFENet2(f1)
        outs = []
        for block in self.RDBs:
            x = block(x)
            outs.append(x)
        return self.GFF(torch.cat(outs, 1)) + f1
