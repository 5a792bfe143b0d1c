"""The paper's training samples: random-scale crops, their low-resolution version, and
random target pixels with their coordinates and cell."""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from ..models.liif import axis_centres


def downsample(hr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of (C, H, W) or (B, C, H, W) in [0, 1] to ``size``."""
    x = hr if hr.ndim == 4 else hr[None]
    y = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    return y if hr.ndim == 4 else y[0]


def grid_coords(h: int, w: int) -> torch.Tensor:
    """Pixel-centre coordinates of an (h, w) grid, (h*w, 2) in [-1, 1], row first."""
    yy, xx = torch.meshgrid(axis_centres(h), axis_centres(w), indexing="ij")
    return torch.stack((yy, xx), -1).view(-1, 2)


def augment(x: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    if transpose:
        x = x.transpose(-2, -1)
    return x


def sample_patch(img: torch.Tensor, inp_size: int = 48, scale_range=(1.0, 4.0), n_samples: int = 2304,
                 rng: random.Random | None = None) -> dict[str, torch.Tensor]:
    """One training sample from a (3, H, W) image in [0, 1].

    Returns ``inp`` (3, s, s) on the [-1, 1] scale, ``coord`` (n, 2), ``cell`` (n, 2) and
    ``gt`` (n, 3) on the [-1, 1] scale, plus ``scale``.
    """
    rng = rng or random
    s = rng.uniform(*scale_range)
    hr_size = round(inp_size * s)
    _, h, w = img.shape
    if h < hr_size or w < hr_size:
        raise ValueError(f"image of {h}x{w} is smaller than the {hr_size}px crop that scale {s:.2f} needs")
    y0, x0 = rng.randint(0, h - hr_size), rng.randint(0, w - hr_size)
    hr = img[:, y0:y0 + hr_size, x0:x0 + hr_size]
    flips = (rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5)
    hr = augment(hr, *flips)
    lr = downsample(hr, (inp_size, inp_size))
    coord = grid_coords(hr_size, hr_size)
    rgb = hr.reshape(3, -1).t()
    if n_samples and n_samples < coord.shape[0]:
        pick = torch.tensor(rng.sample(range(coord.shape[0]), n_samples))
        coord, rgb = coord[pick], rgb[pick]
    cell = torch.full_like(coord, 2 / hr_size)
    return {"inp": (lr - 0.5) / 0.5, "coord": coord, "cell": cell, "gt": (rgb - 0.5) / 0.5,
            "scale": torch.tensor(s)}


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def min_side_for(inp_size: int, scale_range) -> int:
    return math.ceil(inp_size * max(scale_range)) + 1
