"""The LM-LIIF block decoder as it was before issue 18 (commit 18ada57), kept for
``bench_render.py`` only: the benchmark times it against the package's current one in the
same run. Not used by the package."""

from __future__ import annotations

import torch

from napari_liif.models.family import Block, blend


def decode_block_before(family, products: torch.Tensor, block: Block, state) -> torch.Tensor:
    """The old ``LmliifFamily.decode_block``: all folded values gathered per sample
    (channels first), then the render MLP in the model's dtype."""
    net, d = family.net, family.net.hidden_dim
    ny, nx, k = products.shape
    col_shifts = sorted(block.cols)
    members, (n_rows, n_cols) = block.members, block.shape
    m = len(members)
    cf = products.permute(2, 0, 1)
    ix = torch.cat([block.cols[s][0] for s in col_shifts])
    by_col = cf.index_select(2, ix).view(k, ny, len(col_shifts), n_cols).reshape(k, ny * len(col_shifts), n_cols)
    iy = torch.cat([block.rows[sy][0] * len(col_shifts) + col_shifts.index(sx) for sy, sx in members])
    f = by_col.index_select(1, iy).view(k, m, n_rows, n_cols)
    dt = products.dtype
    ry = torch.stack([block.rows[sy][1] for sy, _ in members]).to(dt)[:, :, None]
    rx = torch.stack([block.cols[sx][1] for _, sx in members]).to(dt)[:, None, :]
    a = torch.addcmul(torch.addcmul(f[:d], f[d:2 * d], ry), f[2 * d:3 * d], rx).relu_().view(d, -1)
    flat = f.view(k, -1)
    for i, layer in enumerate(net.imnet.linears[1:-1]):
        o = 3 * d + 2 * d * i
        a = torch.addcmul(flat[o + d:o + 2 * d], layer.weight @ a, flat[o:o + d]).relu_()
    last = net.imnet.linears[-1]
    out = torch.addmm(last.bias[:, None], last.weight, a).float()
    preds = out.view(-1, m, n_rows, n_cols).permute(1, 2, 3, 0)
    return blend(preds, block)
