"""LM-LIIF (Latent Modulated Function, He and Jin, CVPR 2024): LIIF's representation with
the heavy MLP moved onto the latents.

Per latent, a *latent MLP* (``hypernet``) reads the 3x3-unfolded latent and the render's
cell and emits, for each of the render MLP's hidden layers, a scale and a shift modulation,
plus (``mod_input``) a compressed latent ``z``. Per query and ensemble member, a tiny
*render MLP* (``imnet``, :class:`LMMLP`) reads ``[z, rel_coord, rel_cell]``; each hidden
layer computes ``relu(linear(x) * (1 + scale_k) + shift_k)`` with the modulations of the
member's latent; the output layer is not modulated. Everything else (coordinates, the
local ensemble with its +-1/h shifts and 1e-6, nearest lookup, opposite-area weights) is
LIIF's, shared from :mod:`napari_liif.models.liif`.

Output layout of the latent MLP (``depth`` hidden layers of width ``d``): ``depth * d``
scales (layer ``k`` at ``[k*d, (k+1)*d)``), then ``depth * d`` shifts, then ``d`` for ``z``
if ``mod_input``. The layout is kept when ``mod_scale`` or ``mod_shift`` is off (the unused
part is ignored), so the sizes never depend on those switches. The hypernet spec's
``out_dim`` is overridden by these sizes, as in the official code.

``bilinear_residual`` (ours, off in official files) adds the bilinearly sampled input to
the output, as for our LIIF models. ``cmsr_spec`` (the official test-time approximation)
is accepted in a spec and not applied: results are always the exact function.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import make, register
from .liif import ENSEMBLE_SHIFTS, EPS_SHIFT, axis_centres, bilinear_at, nearest_latent


@register("lmmlp")
class LMMLP(nn.Module):
    """The modulated render MLP: ``hidden_depth`` Linear layers of ``hidden_dim`` (each
    modulated, then ReLU) and a Linear output. Names ``layers.{0,2,...}`` as the official."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 16, hidden_depth: int = 6,
                 mod_scale: bool = True, mod_shift: bool = True):
        super().__init__()
        if hidden_depth < 1 or hidden_dim < 1:
            raise ValueError(f"lmmlp needs hidden_depth >= 1 and hidden_dim >= 1, got {hidden_depth}, {hidden_dim}")
        layers: list[nn.Module] = []
        last = in_dim
        for _ in range(hidden_depth):
            layers += [nn.Linear(last, hidden_dim), nn.ReLU()]
            last = hidden_dim
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.hidden_dim, self.hidden_depth = hidden_dim, hidden_depth
        self.mod_scale, self.mod_shift = bool(mod_scale), bool(mod_shift)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None) -> torch.Tensor:
        """x: (..., in_dim); scale, shift: (..., depth, hidden_dim) or None -> (..., out_dim)."""
        lin = self.linears
        for k, layer in enumerate(lin[:-1]):
            x = layer(x)
            if scale is not None:
                x = x * (1 + scale[..., k, :])
            if shift is not None:
                x = x + shift[..., k, :]
            x = torch.relu(x)
        return lin[-1](x)


@register("lmliif")
class LMLIIF(nn.Module):
    def __init__(self, encoder_spec: dict, imnet_spec: dict | None = None, hypernet_spec: dict | None = None,
                 local_ensemble: bool = True, feat_unfold: bool = True, cell_decode: bool = True,
                 mod_input: bool = True, cmsr_spec: dict | None = None, bilinear_residual: bool = False):
        super().__init__()
        if imnet_spec is None or hypernet_spec is None:
            raise ValueError("LM-LIIF needs an imnet_spec (the render MLP) and a hypernet_spec (the latent MLP)")
        self.local_ensemble, self.feat_unfold = bool(local_ensemble), bool(feat_unfold)
        self.cell_decode, self.mod_input = bool(cell_decode), bool(mod_input)
        self.bilinear_residual = bool(bilinear_residual)
        self.cmsr_spec = cmsr_spec  # accepted, never applied (it changes the result)
        self.encoder = make(encoder_spec)
        c = self.encoder.out_dim
        self.feat_dim = c * (9 if self.feat_unfold else 1)
        iargs = dict(imnet_spec.get("args") or {})
        d, depth = int(iargs.get("hidden_dim", 16)), int(iargs.get("hidden_depth", 6))
        self.hidden_dim, self.hidden_depth = d, depth
        self.mod_dim = 2 * d * depth + (d if self.mod_input else 0)
        cell_in = 2 if self.cell_decode else 0
        self.hypernet = make(hypernet_spec, in_dim=self.feat_dim + cell_in, out_dim=self.mod_dim)
        self.imnet = make(imnet_spec, in_dim=(d if self.mod_input else c) + 2 + cell_in)

    # -- once per image -------------------------------------------------------------
    def encode(self, inp: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> latent grid (B, C, H, W)."""
        return self.encoder(inp)

    def unfold(self, feat: torch.Tensor) -> torch.Tensor:
        """3x3 neighbourhoods, zero padded, channel-major (c*9 + k): (B, C*9, h, w)."""
        if not self.feat_unfold:
            return feat
        b, c, h, w = feat.shape
        return F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)

    # -- once per latent and cell ---------------------------------------------------
    def modulations(self, feat: torch.Tensor, rel_cell: torch.Tensor | None) -> torch.Tensor:
        """Latent MLP on every latent: feat (B, C, h, w); rel_cell (B, 2) = cell * (h, w), or
        None without cell decoding -> (B, h, w, mod_dim)."""
        b, _, h, w = feat.shape
        x = self.unfold(feat).permute(0, 2, 3, 1)
        if self.cell_decode:
            x = torch.cat([x, rel_cell.to(x.dtype)[:, None, None, :].expand(b, h, w, 2)], -1)
        return self.hypernet(x)

    def split(self, mods: torch.Tensor):
        """(..., mod_dim) -> scale, shift (each (..., depth, d) or None) and z (..., d) or None."""
        d, depth = self.hidden_dim, self.hidden_depth
        n = d * depth
        lead = mods.shape[:-1]
        scale = mods[..., :n].reshape(*lead, depth, d) if self.imnet.mod_scale else None
        shift = mods[..., n: 2 * n].reshape(*lead, depth, d) if self.imnet.mod_shift else None
        z = mods[..., 2 * n:] if self.mod_input else None
        return scale, shift, z

    def shifts(self):
        return (ENSEMBLE_SHIFTS, EPS_SHIFT) if self.local_ensemble else (((0, 0),), 0.0)

    # -- per query ---------------------------------------------------------------------
    def decode(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor | None = None,
               inp: torch.Tensor | None = None) -> torch.Tensor:
        """Values at arbitrary coordinates (the training / reference path).

        feat: (B, C, h, w) latents; coord: (B, N, 2) in [-1, 1]; cell: (B, N, 2) in [-1, 1]
        units; the latent MLP reads each image's first cell (LM-LIIF's modulations belong to a
        render's cell, not to a query). inp: (B, 3, H, W), needed only with the residual.
        Returns (B, N, out_dim) on the [-1, 1] scale.
        """
        b, c, h, w = feat.shape
        n = coord.shape[1]
        rel_cell = cell[:, 0] * cell.new_tensor([h, w]) if self.cell_decode else None
        mods = self.modulations(feat, rel_cell).reshape(b * h * w, self.mod_dim)
        raw = None if self.mod_input else feat.permute(0, 2, 3, 1).reshape(b * h * w, c)
        cy, cx = axis_centres(h, device=coord.device), axis_centres(w, device=coord.device)
        base = (torch.arange(b, device=coord.device) * (h * w)).view(b, 1)
        shifts, eps = self.shifts()
        preds, areas = [], []
        for sy, sx in shifts:
            iy = nearest_latent(coord[..., 0], h, sy, eps)
            ix = nearest_latent(coord[..., 1], w, sx, eps)
            idx = (base + iy * w + ix).reshape(-1)
            rel = torch.stack(((coord[..., 0] - cy[iy]) * h, (coord[..., 1] - cx[ix]) * w), -1)
            scale, shift, z = self.split(mods[idx].view(b, n, self.mod_dim))
            parts = [z if z is not None else raw[idx].view(b, n, c), rel.to(mods.dtype)]
            if self.cell_decode:
                parts.append(rel_cell.to(mods.dtype)[:, None, :].expand(b, n, 2))
            preds.append(self.imnet(torch.cat(parts, -1), scale, shift).float())
            areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
        if len(shifts) == 4:
            areas = [areas[3], areas[2], areas[1], areas[0]]  # weight by the opposite area
        tot = sum(areas)
        out = sum(p * (a / tot).unsqueeze(-1) for p, a in zip(preds, areas))
        if self.bilinear_residual:
            out = out + bilinear_at(inp, coord)
        return out

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor | None = None):
        return self.decode(self.encode(inp), coord, cell, inp)

    # -- the fast render path: per-latent products, per-sample coordinate terms ----------
    def tile_products(self, feat: torch.Tensor) -> torch.Tensor:
        """What a latent tile caches whatever the cell: the latent MLP's first-layer feature
        term (the 3x3 unfold times its weights is a 3x3 convolution, bias included), plus
        the raw latent without ``mod_input``. (B, C, h, w) -> (B, P, h, w)."""
        first = self.hypernet.linears[0]
        k = 3 if self.feat_unfold else 1
        c = self.encoder.out_dim
        wf = first.weight[:, : self.feat_dim].reshape(first.out_features, c, k, k)
        proj = F.conv2d(feat, wf, first.bias, padding=k // 2)
        return proj if self.mod_input else torch.cat([proj, feat], 1)

    @property
    def folded_dim(self) -> int:
        """Per-latent values of :meth:`cell_products`: A, P, Q of the first render layer
        and S_k, B_k of the others."""
        return self.hidden_dim * (3 + 2 * (self.hidden_depth - 1))

    def cell_products(self, prods: torch.Tensor, rel_cell) -> torch.Tensor:
        """Everything per latent that depends on the render's cell, folded so that a sample
        adds only its coordinate terms. prods (..., P) channels last from ``tile_products``;
        rel_cell (cell_y * h, cell_x * w) -> (..., folded_dim):

        * ``A = (W_u u + W_c rel_cell + b_0)(1 + s_0) + t_0``, ``P = W_ry (1 + s_0)``,
          ``Q = W_rx (1 + s_0)``: the first render layer is ``relu(A + ry P + rx Q)``;
        * for hidden layer k >= 1, ``S_k = 1 + s_k`` and ``B_k = b_k S_k + t_k``: the layer is
          ``relu((W_k a) S_k + B_k)``.
        """
        d, depth, c = self.hidden_dim, self.hidden_depth, self.encoder.out_dim
        hl = self.hypernet.linears
        n1 = hl[0].out_features
        pre, raw = prods[..., :n1], prods[..., n1:]
        rc = torch.as_tensor(rel_cell, dtype=pre.dtype, device=pre.device)
        x = pre + rc @ hl[0].weight[:, self.feat_dim:].t() if self.cell_decode else pre
        for layer in hl[1:]:
            x = F.linear(torch.relu(x), layer.weight, layer.bias)
        scale, shift, z = self.split(x)
        lead = x.shape[:-1]
        one = x.new_ones(lead + (depth, d))
        s = one + scale if scale is not None else one
        t = shift if shift is not None else torch.zeros_like(one)
        w0 = self.imnet.linears[0]
        nz = d if self.mod_input else c
        u = z if self.mod_input else raw
        base = F.linear(u, w0.weight[:, :nz], w0.bias)
        if self.cell_decode:
            base = base + rc @ w0.weight[:, nz + 2:].t()
        wr = w0.weight[:, nz:nz + 2]
        parts = [base * s[..., 0, :] + t[..., 0, :], wr[:, 0] * s[..., 0, :], wr[:, 1] * s[..., 0, :]]
        for k, layer in enumerate(self.imnet.linears[1:-1], start=1):
            parts += [s[..., k, :], layer.bias * s[..., k, :] + t[..., k, :]]
        return torch.cat(parts, -1)

    def render_folded(self, f: torch.Tensor, ry: torch.Tensor, rx: torch.Tensor) -> torch.Tensor:
        """The render MLP from folded per-latent values ``f`` (..., folded_dim), already
        gathered per sample, and the sample's relative coordinates ``ry``, ``rx`` (broadcast
        against ``f``'s leading shape) -> (..., out_dim)."""
        d = self.hidden_dim
        lead = f.shape[:-1]
        a = torch.relu(f[..., :d] + ry[..., None] * f[..., d:2 * d] + rx[..., None] * f[..., 2 * d:3 * d])
        a = a.reshape(-1, d)
        f2 = f.reshape(-1, f.shape[-1])
        for k, layer in enumerate(self.imnet.linears[1:-1]):
            o = 3 * d + 2 * d * k
            a = torch.relu(torch.addcmul(f2[:, o + d:o + 2 * d], a @ layer.weight.t(), f2[:, o:o + d]))
        out = self.imnet.linears[-1]
        return F.linear(a, out.weight, out.bias).reshape(lead + (out.out_features,))

    def macs(self) -> dict[str, int]:
        """Multiply-adds of the decoder: per latent (latent MLP, for one cell) and per output
        pixel (render MLP, times the ensemble members)."""
        hyper = sum(m.in_features * m.out_features for m in self.hypernet.linears)
        render = sum(m.in_features * m.out_features for m in self.imnet.linears)
        return {"per_latent": hyper, "per_pixel": render * len(self.shifts()[0])}
