"""Tiny LIIF models and an independent render for the API, CLI and batch tests.

* ``tiny_net`` / ``tiny_model``: a random EDSR-baseline LIIF (2 residual blocks, 8 features,
  a 32-32 decoder): fast enough for dozens of upscales on a two-core CPU. Its weights come
  from ``realistic_init``, not PyTorch's default (whose outputs have a std of ~0.03, so that
  a comparison within half a grey level could hardly fail).
* ``bilinear_model``: the same with the LTE-style bilinear residual switched on and the
  decoder's last layer zeroed, so it renders exactly the bilinear interpolation of its input.
  A model whose output is known makes intensity ranges checkable with numbers.
* ``reference_render``: the official query of a whole output grid through ``LIIF.forward``
  (coordinates and cell built here, as the official demo builds them), sharing no code with
  ``EncodedField.render`` which ``upscale`` uses.
* ``bilinear_numpy``: bilinear resampling (pixel centres, border clamping) in plain NumPy.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from napari_liif import models
from napari_liif.checkpoint import save_safetensors
from napari_liif.engine import LiifModel


def tiny_spec(bilinear_residual: bool = False) -> dict:
    args = {
        "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True, "n_resblocks": 2, "n_feats": 8}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [32, 32]}},
    }
    if bilinear_residual:
        args["bilinear_residual"] = True
    return {"name": "liif", "args": args}


def realistic_init(net: torch.nn.Module, seed: int = 0, out_gain: float = 0.2) -> torch.nn.Module:
    """Re-draw every convolution and linear layer of ``net`` in place (seeded) so that features and
    outputs have image-like magnitudes: He-normal weights (std sqrt(2 / fan_in); the last linear
    layer ``out_gain / sqrt(fan_in)``), biases uniform in [-0.1, 0.1]. Returns ``net``.

    For ``tiny_net`` the default gain gives renders with a std of ~0.13 on [0, 1] (34 grey levels
    of 8 bits) of which under 1 % clamp at 0 or 1."""
    gen = torch.Generator().manual_seed(seed)
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
              and m.weight.requires_grad]  # (EDSR's frozen mean-shift convolutions keep their values)
    last_linear = [m for m in layers if isinstance(m, torch.nn.Linear)][-1:]
    with torch.no_grad():
        for m in layers:
            fan_in = m.weight[0].numel()
            gain = out_gain if m in last_linear else 2 ** 0.5
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (gain / fan_in ** 0.5))
            m.bias.copy_(torch.rand(m.bias.shape, generator=gen) * 0.2 - 0.1)
    return net


def tiny_net(seed: int = 0, bilinear_residual: bool = False) -> tuple[torch.nn.Module, dict]:
    spec = tiny_spec(bilinear_residual)
    torch.manual_seed(seed)
    return realistic_init(models.make(spec).eval(), seed), spec


def tiny_model(seed: int = 0) -> LiifModel:
    net, spec = tiny_net(seed)
    return LiifModel(net, spec, device="cpu")


def bilinear_model() -> LiifModel:
    net, spec = tiny_net(1, bilinear_residual=True)
    last = net.imnet.linears[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    return LiifModel(net, spec, device="cpu")


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    net, spec = tiny_net(seed)
    return save_safetensors(path, net, spec)


def pixel_centres(n: int) -> np.ndarray:
    """Centres of n pixels on [-1, 1]: -1 + (2i + 1) / n."""
    return -1 + (2 * np.arange(n) + 1) / n


def reference_render(model: LiifModel, u: np.ndarray, out_hw: tuple[int, int], cell_hw=None) -> np.ndarray:
    """The official whole-grid query: (H, W) or (H, W, 3) in [0, 1] -> (rows, cols, 3) in [0, 1].

    ``cell_hw`` is the cell in [-1, 1] units; the default (2/rows, 2/cols) is the official one.
    """
    net = copy.deepcopy(model.net).float()
    a = np.asarray(u, np.float32)
    a = np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a
    inp = (torch.from_numpy(a).permute(2, 0, 1)[None] - 0.5) / 0.5
    rows, cols = out_hw
    yy, xx = np.meshgrid(pixel_centres(rows), pixel_centres(cols), indexing="ij")
    coord = torch.from_numpy(np.stack([yy, xx], -1).reshape(1, -1, 2)).float()
    cy, cx = cell_hw if cell_hw is not None else (2 / rows, 2 / cols)
    cell = torch.tensor([cy, cx], dtype=torch.float32).expand(1, rows * cols, 2)
    with torch.no_grad():
        pred = net(inp, coord, cell)
    return (pred[0] * 0.5 + 0.5).clamp(0, 1).reshape(rows, cols, 3).numpy()


def bilinear_numpy(a: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear samples of a 2D array at the output pixel centres (half-pixel convention,
    border clamping, as grid_sample with align_corners=False), in float64."""
    a = np.asarray(a, np.float64)
    taps = []
    for n_in, n_out in zip(a.shape, out_hw):
        p = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(p).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        taps.append((i0, i1, p - i0))
    (y0, y1, ty), (x0, x1, tx) = taps
    ty, tx = ty[:, None], tx[None, :]
    top = a[y0][:, x0] * (1 - tx) + a[y0][:, x1] * tx
    bot = a[y1][:, x0] * (1 - tx) + a[y1][:, x1] * tx
    return top * (1 - ty) + bot * ty


class one_torch_thread:
    """Context manager: run torch on one thread, then restore the previous setting.

    The tiny models of these tests are dominated by thread hand-offs; on a busy two-core
    machine one thread is several times faster than two."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def nearest(a: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``a`` (2D or more) resampled to ``out_hw`` by the nearest input pixel of each output pixel
    centre, as masks and nodata are carried (``intensity.nearest_index``)."""
    from napari_liif.intensity import nearest_index

    return a[nearest_index(a.shape[0], out_hw[0])][:, nearest_index(a.shape[1], out_hw[1])]
