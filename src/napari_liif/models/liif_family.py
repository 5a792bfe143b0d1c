"""How LIIF decodes a block of a sample grid: exactly the official query, made fast.

* The first MLP layer's feature part is per latent (``LIIF.project``): cached with the tile, so
  a query adds only its relative-coordinate and cell terms.
* On a regular grid the latent row of a sample depends only on its output row and the latent
  column only on its output column, so a block's first-layer input is built by two
  ``index_select`` passes (columns, then rows) with separable coordinate terms, never by a
  per-sample gather of an unfolded feature map.
* The four ensemble members of a block go through the rest of the MLP as one batch, with
  fused matrix product + bias + ReLU (``linear_relu``) and activations kept in the model's
  dtype (bf16 end to end at ``precision="bf16"``); the ensemble sum and the bilinear residual
  are float32.
Nothing here depends on the cell per latent: ``cell_products`` is the identity.
"""

from __future__ import annotations

import torch

from .family import Block, Family, blend, register_family
from .liif import LIIF


def first_layer(lat: torch.Tensor, rows: dict, cols: dict, members, wc: torch.Tensor, bias,
                relu: bool = True) -> torch.Tensor:
    """First-layer activations of every ensemble member on a block of a regular grid.

    lat: projected latents (ny, nx, hidden) under the block; ``rows[s] = (index, ry)`` gives,
    for row shift ``s``, the latent row (index into ``lat``) and the relative coordinate of
    each output row, and ``cols`` the same for columns; wc: (hidden, 2) coordinate weights;
    bias: (hidden,) cell term, or 0. Returns relu(lat[row, col] + ry*wc[:, 0] + rx*wc[:, 1]
    + bias) as (members, rows, cols, hidden) in ``lat``'s dtype (no ReLU if ``relu`` is false:
    an MLP without hidden layers, whose first layer is its output).

    The coordinate terms are separable, so the column term is added after gathering the
    latent columns of every column shift, and the row term after gathering, for every member,
    the rows of that result: five whole-block operations whatever the number of members
    (few large operations also keep the threads in step when other processes share the CPU).
    """
    ny, _, d = lat.shape
    col_shifts = sorted(cols)
    ncs, n_cols, n_rows = len(col_shifts), len(cols[col_shifts[0]][0]), len(next(iter(rows.values()))[0])
    # columns: (ny, ncs, cols, hidden), with the column and cell terms
    ix = torch.cat([cols[s][0] for s in col_shifts])
    col_term = torch.stack([cols[s][1] for s in col_shifts])[..., None] * wc[:, 1] + bias
    by_col = lat.index_select(1, ix).view(ny, ncs, n_cols, d).add_(col_term.to(lat.dtype))
    # rows: member (sy, sx) reads row iy * ncs + (index of sx) of by_col seen as (ny * ncs, ...)
    iy = torch.cat([rows[sy][0] * ncs + col_shifts.index(sx) for sy, sx in members])
    out = by_col.view(ny * ncs, n_cols, d).index_select(0, iy).view(len(members), n_rows, n_cols, d)
    row_term = torch.stack([rows[sy][1] for sy, _ in members])[..., None] * wc[:, 0]
    out.add_(row_term.to(lat.dtype)[:, :, None, :])
    return out.relu_() if relu else out


@register_family("liif", LIIF)
class LiifFamily(Family):
    """The LIIF decoder (local ensemble, feature unfolding, cell decoding, optional bilinear
    residual) on cached first-layer projections."""

    @property
    def out_dim(self) -> int:
        return self.net.imnet.linears[-1].out_features

    @property
    def tile_channels(self) -> int:
        return self.net.imnet.linears[0].out_features

    def tile_products(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net.project(feat)

    def prepare(self, rel_cell, device):
        """The first layer's cell term, (hidden,) in the model's dtype, or 0 without cell decoding."""
        wc, wcell = self.net.coord_weights()
        if wcell is None:
            return wc, 0
        return wc, torch.tensor(rel_cell, device=device, dtype=wc.dtype) @ wcell.t()

    def decode_block(self, products: torch.Tensor, block: Block, state) -> torch.Tensor:
        wc, bias = state
        net = self.net
        hidden = first_layer(products, block.rows, block.cols, block.members, wc, bias,
                             relu=len(net.imnet.linears) > 1)
        m, r, c, d = hidden.shape
        preds = net.tail_from_hidden(hidden.view(-1, d)).float().view(m, r, c, -1)
        return blend(preds, block)
