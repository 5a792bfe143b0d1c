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
piece of a run and ``q`` = (member, row piece, column piece). The folded values are read
once per piece, not per sample, and each layer broadcasts them over the positions. The cell
products are stored channels first (``cells_channels_first``), so where every shift's pieces
read consecutive latents (``Runs.start``) a member's values are a strided window of each
channel's plane, copied once; elsewhere they are gathered by index. Channels come first, so
every matrix product is a wide ``(d x d) @ (d x slots)`` one. The per-sample part runs in
float32 at every precision (bf16 coordinates would band deep zooms, and on a CPU these small
float32 layers are no slower), in chunks of :data:`CHUNK_SLOTS` slots written into two reused
buffers, so a layer's activations stay in the L2 cache; a block's larger temporaries live in
per-thread :class:`~napari_liif.models.family.Scratch` buffers, so nothing is allocated per
layer or, after the first block, per block.
"""

from __future__ import annotations

import itertools

import torch

from .family import Block, Family, Runs, Scratch, register_family
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
    cells_channels_first = True

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
        row_shifts, col_shifts = sorted(block.rows), sorted(block.cols)
        if tuple(block.members) != tuple(itertools.product(row_shifts, col_shifts)):
            raise ValueError(f"LM-LIIF decodes ensembles of every (row, column) shift pair, got {block.members}")
        nrs, ncs, ry_n, rx_n = len(row_shifts), len(col_shifts), yr.count, xr.count
        # slots (p, q): p = (row position, column position) in a piece, q = (member, row piece,
        # column piece), the member being (row shift, column shift)
        npos, nq = yr.n * xr.n, nrs * ncs * ry_n * rx_n
        scratch = Scratch(products.device)
        f = self._gather(products, block, yr, xr, row_shifts, col_shifts, scratch)  # (k, nq) float32
        ry = torch.stack([block.rows[s][1][yr.slot] for s in row_shifts], 1)  # (row position, row shift, row piece)
        rx = torch.stack([block.cols[s][1][xr.slot] for s in col_shifts], 1)
        full = (yr.n, xr.n, nrs, ncs, ry_n, rx_n)
        ryq = scratch.take("ry", (npos, nq)).view(full).copy_(ry[:, None, :, None, :, None].expand(full)).view(npos, nq)
        rxq = scratch.take("rx", (npos, nq)).view(full).copy_(rx[None, :, None, :, None, :].expand(full)).view(npos, nq)
        preds = scratch.take("preds", (self.out_dim, npos, nq))
        size = min(CHUNK_SLOTS, npos * nq) if nq <= CHUNK_SLOTS else CHUNK_SLOTS
        bufs = scratch.take("bufs", (2, d * size))
        for p0, p1, q0, q1 in _chunks(npos, nq, CHUNK_SLOTS):
            fc = f[:, None, q0:q1]  # (k, 1, qc): per-piece values, broadcast over positions
            a = bufs[0, : d * (p1 - p0) * (q1 - q0)].view(d, p1 - p0, q1 - q0)
            y = bufs[1, : a.numel()].view(a.shape)
            # first layer: relu(A + ry P + rx Q)
            torch.addcmul(fc[:d], fc[d:2 * d], ryq[None, p0:p1, q0:q1], out=a)
            a.addcmul_(fc[2 * d:3 * d], rxq[None, p0:p1, q0:q1]).relu_()
            for i, w in enumerate(hidden):
                o = 3 * d + 2 * d * i  # S_k at rows [o, o + d), B_k at [o + d, o + 2d)
                torch.mm(w, a.view(d, -1), out=y.view(d, -1))
                torch.addcmul(fc[o + d:o + 2 * d], y, fc[o:o + d], out=y).relu_()
                a, y = y, a
            preds[:, p0:p1, q0:q1] = torch.addmm(b_out[:, None], w_out, a.view(d, -1)).view(-1, p1 - p0, q1 - q0)
        out = self._blend(preds.view(-1, npos, nrs * ncs, ry_n * rx_n), ryq.view(npos, nrs * ncs, -1),
                          rxq.view(npos, nrs * ncs, -1))
        out = out.view(-1, yr.n, xr.n, ry_n, rx_n).permute(1, 3, 2, 4, 0).reshape(yr.n * ry_n, xr.n * rx_n, -1)
        out = out.index_select(0, yr.unpad).index_select(1, xr.unpad)
        return out if block.bilinear is None else out + block.bilinear

    @staticmethod
    def _gather(products: torch.Tensor, block: Block, yr: Runs, xr: Runs, row_shifts, col_shifts,
                scratch: Scratch) -> torch.Tensor:
        """The folded values of each (row shift, column shift, row piece, column piece):
        (k, q) float32. ``products`` (ny, nx, k) is best channels first in memory
        (``cells_channels_first``). Where every shift's pieces read consecutive latents
        (``Runs.start``: a zoom-in away from clamped borders) the values are strided windows
        of each channel's plane, copied once; otherwise two ``index_select`` passes (columns,
        then rows) on the channels-first view."""
        k = products.shape[-1]
        cf = products.permute(2, 0, 1)  # (k, ny, nx), contiguous when stored channels first
        if cf.dtype != torch.float32:
            cf = cf.float()
        nrs, ncs = len(row_shifts), len(col_shifts)
        shape = (k, nrs, ncs, yr.count, xr.count)
        out = scratch.take("f", shape)
        if yr.start is not None and xr.start is not None and len(yr.start) == nrs <= 2 and len(xr.start) == ncs <= 2:
            sk, sy, sx = cf.stride()
            dy, dx = yr.start[-1] - yr.start[0], xr.start[-1] - xr.start[0]  # latents between the shifts' windows
            view = cf.as_strided(shape, (sk, dy * sy, dx * sx, sy, sx),
                                 cf.storage_offset() + yr.start[0] * sy + xr.start[0] * sx)
        else:
            ix = torch.cat([block.cols[s][0][xr.first] for s in col_shifts])
            iy = torch.cat([block.rows[s][0][yr.first] for s in row_shifts])
            got = cf.index_select(2, ix).index_select(1, iy)  # (k, row shift * row piece, column shift * column piece)
            view = got.view(k, nrs, yr.count, ncs, xr.count).permute(0, 1, 3, 2, 4)
        return out.copy_(view).view(k, -1)

    @staticmethod
    def _blend(preds: torch.Tensor, ry: torch.Tensor, rx: torch.Tensor) -> torch.Tensor:
        """The local ensemble's sum of ``preds`` (out, npos, m, q / m) with the members'
        opposite-area weights (as :func:`~napari_liif.models.family.ensemble_weights`), from the
        slots' relative coordinates ``ry``, ``rx`` (npos, m, q / m): (out, npos, q / m)."""
        m = preds.shape[2]
        if m == 1:
            return preds[:, :, 0]
        areas = (ry * rx).abs_().add_(1e-9)
        if m == 4:
            areas = areas.flip(1)  # each member is weighted by the diagonally opposite area
        tot = areas.sum(1, keepdim=True)
        return (preds * (areas / tot)).sum(2)
