"""How LM-LIIF decodes a block of a sample grid (the field's side of :mod:`.lmliif`).

Three levels of work, each done as rarely as it can be:

* per latent tile, whatever the render (cached with the tile): the latent MLP's first-layer
  feature term, a 3 x 3 convolution (:meth:`LMLIIF.tile_products`);
* per latent and cell (cached keyed by the cell: a pan reuses it, a zoom reruns only this for
  the visible latents, never the encoder): the rest of the latent MLP, and the render MLP's
  first-layer latent, cell and bias terms folded with every layer's scale and shift
  (:meth:`LMLIIF.cell_products`);
* per sample: the relative-coordinate terms and the small modulated layers. On a regular
  grid the latent row of a sample depends only on its row and the column only on its column,
  so a block gathers the folded values with two ``index_select`` passes (columns once per
  column shift, then rows per member), as the LIIF family does: the samples of a latent read
  its modulations from one contiguous run, never through a per-sample gather.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .family import Block, Family, blend, register_family
from .lmliif import LMLIIF


@register_family("lmliif", LMLIIF)
class LmliifFamily(Family):
    """The LM-LIIF decoder on cached latent-MLP products, with cell-keyed modulations."""

    cell_dependent = True

    @property
    def out_dim(self) -> int:
        return self.net.imnet.linears[-1].out_features

    @property
    def tile_channels(self) -> int:
        net = self.net
        return net.hypernet.linears[0].out_features + (0 if net.mod_input else net.encoder.out_dim)

    @property
    def cell_channels(self) -> int:
        return self.net.folded_dim

    def tile_products(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net.tile_products(feat)

    def cell_products(self, products: torch.Tensor, rel_cell) -> torch.Tensor:
        return self.net.cell_products(products, rel_cell).contiguous()

    def decode_block(self, products: torch.Tensor, block: Block, state) -> torch.Tensor:
        net, d = self.net, self.net.hidden_dim
        ny, _, k = products.shape
        col_shifts = sorted(block.cols)
        n_rows, n_cols = block.shape
        ix = torch.cat([block.cols[s][0] for s in col_shifts])
        by_col = products.index_select(1, ix).view(ny * len(col_shifts), n_cols, k)
        iy = torch.cat([block.rows[sy][0] * len(col_shifts) + col_shifts.index(sx) for sy, sx in block.members])
        f = by_col.index_select(0, iy).view(len(block.members), n_rows, n_cols, k)
        dt = products.dtype
        ry = torch.stack([block.rows[sy][1] for sy, _ in block.members]).to(dt)[:, :, None, None]
        rx = torch.stack([block.cols[sx][1] for _, sx in block.members]).to(dt)[:, None, :, None]
        # first render layer: relu(A + ry P + rx Q), everything but ry, rx per latent
        a = (f[..., :d] + ry * f[..., d:2 * d]).add_(rx * f[..., 2 * d:3 * d]).relu_().view(-1, d)
        flat = f.view(-1, k)
        for i, layer in enumerate(net.imnet.linears[1:-1]):
            o = 3 * d + 2 * d * i  # S_k at [o, o + d), B_k at [o + d, o + 2d)
            a = torch.addcmul(flat[:, o + d:o + 2 * d], a @ layer.weight.t(), flat[:, o:o + d]).relu_()
        last = net.imnet.linears[-1]
        preds = F.linear(a, last.weight, last.bias).float().view(len(block.members), n_rows, n_cols, -1)
        return blend(preds, block)
