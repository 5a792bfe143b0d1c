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
        ny, nx, k = products.shape
        col_shifts = sorted(block.cols)
        members, (n_rows, n_cols) = block.members, block.shape
        m = len(members)
        # channels first: (k, latents) is small; the gathered (k, samples) makes every per-layer
        # slice contiguous and every matrix product a wide (d x d) @ (d x samples) one, which
        # runs ~10x faster on a CPU than (samples x d) @ (d x d)
        cf = products.permute(2, 0, 1)
        ix = torch.cat([block.cols[s][0] for s in col_shifts])
        by_col = cf.index_select(2, ix).view(k, ny, len(col_shifts), n_cols).reshape(k, ny * len(col_shifts), n_cols)
        iy = torch.cat([block.rows[sy][0] * len(col_shifts) + col_shifts.index(sx) for sy, sx in members])
        f = by_col.index_select(1, iy).view(k, m, n_rows, n_cols)
        dt = products.dtype
        ry = torch.stack([block.rows[sy][1] for sy, _ in members]).to(dt)[:, :, None]
        rx = torch.stack([block.cols[sx][1] for _, sx in members]).to(dt)[:, None, :]
        # first render layer: relu(A + ry P + rx Q), everything but ry, rx per latent
        a = torch.addcmul(torch.addcmul(f[:d], f[d:2 * d], ry), f[2 * d:3 * d], rx).relu_().view(d, -1)
        flat = f.view(k, -1)
        for i, layer in enumerate(net.imnet.linears[1:-1]):
            o = 3 * d + 2 * d * i  # S_k at rows [o, o + d), B_k at [o + d, o + 2d)
            a = torch.addcmul(flat[o + d:o + 2 * d], layer.weight @ a, flat[o:o + d]).relu_()
        last = net.imnet.linears[-1]
        out = torch.addmm(last.bias[:, None], last.weight, a).float()
        preds = out.view(-1, m, n_rows, n_cols).permute(1, 2, 3, 0)
        return blend(preds, block)
