"""How LM-LIIF decodes a block of a sample grid (the field's side of :mod:`.lmliif`).

Three levels of work, each done as rarely as it can be:

* per latent tile, whatever the render (cached with the tile): the latent MLP's first-layer
  feature term, a 3 x 3 convolution (:meth:`LMLIIF.tile_products`);
* per latent and cell (cached keyed by the cell: a pan reuses it, a zoom reruns only this for
  the visible latents, never the encoder): the rest of the latent MLP, and the render MLP's
  first-layer latent, cell and bias terms folded with every layer's scale and shift
  (:meth:`LMLIIF.cell_products`);
* per sample: the relative-coordinate terms and the small modulated layers.

A block's samples are laid out by the latents they read (``block.row_runs``/``col_runs``,
:class:`~napari_liif.models.family.Runs`): slot ``(p, q)`` with ``p`` the position inside a
piece of a run and ``q`` = (member, row piece, column piece). The folded values are gathered
once per piece, not per sample, and each layer broadcasts them over the positions. Channels
come first, so every matrix product is a wide ``(d x d) @ (d x slots)`` one. The per-sample
part runs in float32 at every precision (bf16 coordinates would band deep zooms, and on a CPU
these small float32 layers are no slower), in chunks of :data:`CHUNK_SLOTS` slots written into
two reused buffers, so a layer's activations stay in the L2 cache and nothing is allocated
per layer.
"""

from __future__ import annotations

import torch

from .family import Block, Family, Runs, register_family
from .lmliif import LMLIIF

#: slots (samples x members, padding included) per pass through the render MLP, written into
#: two reused float32 buffers (1 MiB each); with 128 x 128 blocks the fastest of 4k-16k measured
#: on the 2-core EPYC (fewer, larger operations; docs/performance.md)
CHUNK_SLOTS = 16384
#: output block side on a CPU (the field's default is 64, sized for LIIF's 256-wide layers):
#: the chunks bound the activations, so a larger block only means fewer per-block steps
CPU_BLOCK = 128


def _chunks(p: int, q: int, size: int):
    """(p0, p1, q0, q1) rectangles of at most ``size`` slots covering a (p, q) layout."""
    if p * q <= size:
        yield 0, p, 0, q
    elif q <= size:
        step = size // q
        for p0 in range(0, p, step):
            yield p0, min(p, p0 + step), 0, q
    else:
        for p0 in range(p):
            for q0 in range(0, q, size):
                yield p0, p0 + 1, q0, min(q, q0 + size)


@register_family("lmliif", LMLIIF)
class LmliifFamily(Family):
    """The LM-LIIF decoder on cached latent-MLP products, with cell-keyed modulations."""

    cell_dependent = True
    wants_runs = True

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

    def block_side(self, device: torch.device) -> int | None:
        return CPU_BLOCK if device.type == "cpu" else None

    def tile_products(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net.tile_products(feat)

    def cell_products(self, products: torch.Tensor, rel_cell) -> torch.Tensor:
        return self.net.cell_products(products, rel_cell).contiguous()

    def prepare(self, rel_cell, device):
        """The render MLP's weights from its second layer on, float32: [W_1, ..., W_depth-1]
        (their biases are folded into the products) and the output layer's (W, b)."""
        lins = self.net.imnet.linears
        return [lin.weight.float() for lin in lins[1:-1]], (lins[-1].weight.float(), lins[-1].bias.float())

    def decode_block(self, products: torch.Tensor, block: Block, state) -> torch.Tensor:
        hidden, (w_out, b_out) = state if state is not None else self.prepare(block.rel_cell, products.device)
        d = self.net.hidden_dim
        n_rows, n_cols = block.shape
        yr = block.row_runs or Runs.singles(n_rows, products.device)
        xr = block.col_runs or Runs.singles(n_cols, products.device)
        members = block.members
        m, ry_n, rx_n = len(members), yr.count, xr.count
        npos, nq = yr.n * xr.n, m * ry_n * rx_n
        f = self._gather(products, block, yr, xr)  # (k, nq) float32, q = (member, row piece, col piece)
        # relative coordinates of every slot (npos, nq): rows depend on (row position, member, row piece)
        ry = torch.stack([block.rows[sy][1][yr.slot] for sy, _ in members])  # (m, ny, Ry)
        rx = torch.stack([block.cols[sx][1][xr.slot] for _, sx in members])  # (m, nx, Rx)
        shape = (yr.n, xr.n, m, ry_n, rx_n)
        ry = ry.permute(1, 0, 2)[:, None, :, :, None].expand(shape).reshape(npos, nq)
        rx = rx.permute(1, 0, 2)[None, :, :, None, :].expand(shape).reshape(npos, nq)
        preds = torch.empty(self.out_dim, npos, nq, device=products.device)
        size = min(CHUNK_SLOTS, npos * nq) if nq <= CHUNK_SLOTS else CHUNK_SLOTS
        bufs = torch.empty(2, d * size, device=products.device)
        for p0, p1, q0, q1 in _chunks(npos, nq, CHUNK_SLOTS):
            fc = f[:, None, q0:q1]  # (k, 1, qc): per-piece values, broadcast over positions
            a = bufs[0, : d * (p1 - p0) * (q1 - q0)].view(d, p1 - p0, q1 - q0)
            y = bufs[1, : a.numel()].view(a.shape)
            # first layer: relu(A + ry P + rx Q)
            torch.addcmul(fc[:d], fc[d:2 * d], ry[None, p0:p1, q0:q1], out=a)
            a.addcmul_(fc[2 * d:3 * d], rx[None, p0:p1, q0:q1]).relu_()
            for i, w in enumerate(hidden):
                o = 3 * d + 2 * d * i  # S_k at rows [o, o + d), B_k at [o + d, o + 2d)
                torch.mm(w, a.view(d, -1), out=y.view(d, -1))
                torch.addcmul(fc[o + d:o + 2 * d], y, fc[o:o + d], out=y).relu_()
                a, y = y, a
            preds[:, p0:p1, q0:q1] = torch.addmm(b_out[:, None], w_out, a.view(d, -1)).view(-1, p1 - p0, q1 - q0)
        out = self._blend(preds, ry, rx, m)  # (out, npos, Ry * Rx)
        out = out.view(-1, yr.n, xr.n, ry_n, rx_n).permute(1, 3, 2, 4, 0).reshape(yr.n * ry_n, xr.n * rx_n, -1)
        out = out.index_select(0, yr.unpad).index_select(1, xr.unpad)
        return out if block.bilinear is None else out + block.bilinear

    @staticmethod
    def _gather(products: torch.Tensor, block: Block, yr: Runs, xr: Runs) -> torch.Tensor:
        """The folded values of each (member, row piece, column piece): (k, q) float32, by two
        ``index_select`` passes on the channels-last products (columns for every column shift,
        then rows for every member), each copying whole runs of ``k`` values."""
        ny, _, k = products.shape
        col_shifts = sorted(block.cols)
        ncs = len(col_shifts)
        ix = torch.cat([block.cols[s][0][xr.first] for s in col_shifts])
        by_col = products.index_select(1, ix).view(ny * ncs, xr.count, k)  # row y * ncs + shift
        iy = torch.cat([block.rows[sy][0][yr.first] * ncs + col_shifts.index(sx) for sy, sx in block.members])
        return by_col.index_select(0, iy).view(-1, k).t().float().contiguous()

    @staticmethod
    def _blend(preds: torch.Tensor, ry: torch.Tensor, rx: torch.Tensor, m: int) -> torch.Tensor:
        """The local ensemble's sum of ``preds`` (out, npos, q) with the members' opposite-area
        weights (as :func:`~napari_liif.models.family.ensemble_weights`): (out, npos, q / m)."""
        npos = preds.shape[1]
        preds = preds.view(preds.shape[0], npos, m, -1)
        if m == 1:
            return preds[:, :, 0]
        areas = (ry * rx).abs_().add_(1e-9).view(npos, m, -1)
        if m == 4:
            areas = areas.flip(1)  # each member is weighted by the diagonally opposite area
        tot = areas.sum(1, keepdim=True)
        return (preds * (areas / tot)).sum(2)
