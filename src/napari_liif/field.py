"""An encoded image: a continuous function that can be rendered on any grid, anywhere.

``EncodedField`` is "set once, query many": the encoder runs lazily, tile by tile with a
halo of at least its receptive field (so tiles equal untiled encoding), and keeps the
first-layer projection of each latent tile in a bounded LRU cache. ``render`` evaluates
a rectangle on a regular grid in output blocks, so memory stays bounded for any output
size and only the latent tiles under the rectangle are ever encoded.

How the decoder is made fast without changing its result (see docs/performance.md):

* the first MLP layer's feature part is a per-latent projection (``LIIF.project``), cached
  with the tile, so a query adds only its relative-coordinate and cell terms;
* on a regular grid the latent row of a sample depends only on its output row and the
  latent column only on its output column, so the first-layer input of a block is built by
  two ``index_select`` passes (columns, then rows) with separable coordinate terms, never
  by a per-sample gather of an unfolded feature map;
* the four ensemble members of a block go through the rest of the MLP as one batch, with
  fused matrix product + bias + ReLU (``linear_relu``) and activations kept in the model's
  dtype (bf16 end to end at ``precision="bf16"``).

Coordinates: ``region = (top, left, bottom, right)`` in input *pixel-edge* units, the
whole image being ``(0, 0, H, W)``; pixel ``i`` covers ``[i, i + 1]``. Sample ``(i, j)``
of a render of shape ``(rows, cols)`` sits at the centre of its cell:
``top + (i + 0.5) * (bottom - top) / rows``.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

from .models.liif import axis_centres, nearest_latent

CELL_MODES = ("on", "off", "clamp")
#: largest encoder window, in input pixels with its halo (~362 x 362). Measured on a 2-core
#: EPYC (EDSR-baseline, channels-last): the encoder runs at 70-83 k px/s (fp32) and 151-167 k
#: (bf16) on windows of 128-362 px, but 60-62 k and 115-123 k on 512-724 px windows, whose
#: 64-channel feature maps (67-135 MB in fp32) no longer fit the caches; bigger windows would
#: save halo and lose more in speed. It also bounds the encoder's activation memory (the
#: 256-channel first-layer projection is made tile by tile, never for a whole window).
WINDOW_PX = 1 << 17
Source = Callable[[int, int, int, int], np.ndarray]


def _axis(n_in: int, lo: float, hi: float, n_out: int, shifts, eps, device):
    """Per-axis lookups for a regular grid: normalised sample coords, and per shift the
    latent index and relative coordinate (already multiplied by the latent count)."""
    c = axis_centres(n_out, -1 + 2 * lo / n_in, -1 + 2 * hi / n_in, device=device)
    centres = axis_centres(n_in, device=device)
    idx = [nearest_latent(c, n_in, s, eps) for s in sorted(set(shifts))]
    table = {s: (i, (c - centres[i]) * n_in) for s, i in zip(sorted(set(shifts)), idx)}
    return c, table


def _bilinear_axis(c: torch.Tensor, n: int):
    """Bilinear taps along one axis with border clamping (grid_sample, align_corners=False)."""
    p = ((c + 1) * n - 1) / 2
    p = p.clamp(0, n - 1)
    i0 = p.floor().long()
    i1 = (i0 + 1).clamp(max=n - 1)
    return i0, i1, p - i0


def _first_layer(lat: torch.Tensor, rel_y: dict, rel_x: dict, shifts, wc: torch.Tensor,
                 bias, relu: bool = True) -> torch.Tensor:
    """First-layer activations of every ensemble member on a block of a regular grid.

    lat: projected latents (ny, nx, hidden) under the block; ``rel_y[s] = (rows, ry)`` gives,
    for row shift ``s``, the latent row (index into ``lat``) and the relative coordinate of
    each output row, and ``rel_x`` the same for columns; wc: (hidden, 2) coordinate weights;
    bias: (hidden,) cell term, or 0. Returns relu(lat[row, col] + ry*wc[:, 0] + rx*wc[:, 1]
    + bias) as (members, rows, cols, hidden) in ``lat``'s dtype (no ReLU if ``relu`` is false:
    an MLP without hidden layers, whose first layer is its output).

    The coordinate terms are separable, so the column term is added after gathering the
    latent columns of every column shift, and the row term after gathering, for every member,
    the rows of that result: five whole-block operations whatever the number of members
    (few large operations also keep the threads in step when other processes share the CPU).
    """
    ny, _, d = lat.shape
    col_shifts = sorted(rel_x)
    ncs, cols, rows = len(col_shifts), len(rel_x[col_shifts[0]][0]), len(next(iter(rel_y.values()))[0])
    # columns: (ny, ncs, cols, hidden), with the column and cell terms
    ix = torch.cat([rel_x[s][0] for s in col_shifts])
    col_term = torch.stack([rel_x[s][1] for s in col_shifts])[..., None] * wc[:, 1] + bias
    by_col = lat.index_select(1, ix).view(ny, ncs, cols, d).add_(col_term.to(lat.dtype))
    # rows: member (sy, sx) reads row iy * ncs + (index of sx) of by_col seen as (ny * ncs, ...)
    iy = torch.cat([rel_y[sy][0] * ncs + col_shifts.index(sx) for sy, sx in shifts])
    out = by_col.view(ny * ncs, cols, d).index_select(0, iy).view(len(shifts), rows, cols, d)
    row_term = torch.stack([rel_y[sy][1] for sy, _ in shifts])[..., None] * wc[:, 0]
    out.add_(row_term.to(lat.dtype)[:, :, None, :])
    return out.relu_() if relu else out


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _exact_fp32(model):
    """On CUDA at fp32, keep cuDNN from using TF32 (on by default for convolutions), which
    would move results ~1e-3 away from the official algorithm; elsewhere a no-op."""
    if model.device.type == "cuda" and model.dtype == torch.float32:
        return torch.backends.cudnn.flags(enabled=True, allow_tf32=False)
    return contextlib.nullcontext()


class EncodedField:
    """A LIIF-encoded image. Build it with ``LiifModel.encode``; then ``render`` anywhere."""

    def __init__(self, model, source: Source, shape: tuple[int, int], *, tile: int = 256,
                 cache_bytes: int = 1 << 30, block: int | None = None, window_px: int = WINDOW_PX):
        self.model = model
        self.source = source
        self.shape = (int(shape[0]), int(shape[1]))
        self.tile = int(tile)
        # output block side: on a CPU, 64 keeps a block's activations (16 MiB in fp32) in reach of
        # the caches and is the fastest measured (32-128 tried); a GPU wants far larger batches
        # (256: 268 MB of fp32 activations per hidden layer; chosen, not yet measured on a GPU)
        on_cpu = model is None or model.device.type == "cpu"  # no model: geometry only (cell())
        self.block = int(block) if block is not None else (64 if on_cpu else 256)
        self.cache_bytes = int(cache_bytes)
        self.window_px = int(window_px)
        self._cache: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self._nbytes = 0  # bytes in _cache, kept up to date by _store
        self._lock = threading.RLock()
        self.tiles_encoded = 0  # tiles added to the cache (again after an eviction)
        self.pixels_encoded = 0  # input pixels run through the encoder, halos included

    # -- latents -------------------------------------------------------------------------
    def _input(self, y0, y1, x0, x1) -> torch.Tensor:
        """Source window as (1, 3, h, w) on the [-1, 1] scale, on the model's device/dtype."""
        a = np.asarray(self.source(y0, y1, x0, x1), dtype=np.float32)
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.model.device)
        t = t.unsqueeze(-1).expand(-1, -1, 3) if t.ndim == 2 else t
        return ((t.permute(2, 0, 1) - 0.5) / 0.5).unsqueeze(0).to(self.model.dtype)

    @property
    def halo(self) -> int:
        """Extra input pixels an encoder window needs on each side to equal untiled encoding."""
        return self.model.net.encoder.receptive_radius + 1  # +1 for the 3x3 unfold

    def _encode_window(self, ty0: int, ty1: int, tx0: int, tx1: int) -> dict:
        """Encode tiles ``[ty0, ty1) x [tx0, tx1)`` in one encoder call: {(ty, tx): latents}."""
        (h, w), t, halo = self.shape, self.tile, self.halo
        y0, y1, x0, x1 = ty0 * t, min(h, ty1 * t), tx0 * t, min(w, tx1 * t)
        wy0, wy1, wx0, wx1 = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
        with torch.inference_mode(), _exact_fp32(self.model):
            net = self.model.net
            # channels-last convolutions are ~15 % faster on CPU (oneDNN's native layout), and
            # their output is already the (rows, cols, hidden) layout the decoder gathers from.
            # clone, not contiguous: a (1, 3, h, w) view can already count as channels-last
            # while its strides make the convolution pick a size-dependent kernel, so tiles of
            # different sizes would differ by ~1e-6
            inp = self._input(wy0, wy1, wx0, wx1).clone(memory_format=torch.channels_last)
            feat = net.encode(inp)
            # project tile by tile (the projection has 4x the encoder's channels: for a whole
            # window it would be the largest tensor of all), each with the one latent of margin
            # that the 3x3 unfold reads; the margin's own outputs, which see zero padding, are cut
            m = 1 if net.feat_unfold else 0
            tiles = {}
            for ty in range(ty0, ty1):
                for tx in range(tx0, tx1):
                    a, b = ty * t - wy0, min(h, ty * t + t) - wy0
                    c, d = tx * t - wx0, min(w, tx * t + t) - wx0
                    ea, ec = max(0, a - m), max(0, c - m)
                    p = net.project(feat[:, :, ea: b + m, ec: d + m])[0].permute(1, 2, 0)
                    tiles[(ty, tx)] = p[a - ea: b - ea, c - ec: d - ec].contiguous()
        self.pixels_encoded += (wy1 - wy0) * (wx1 - wx0)
        return tiles

    def _store(self, key, proj: torch.Tensor) -> None:
        old = self._cache.pop(key, None)
        self._nbytes += _nbytes(proj) - (0 if old is None else _nbytes(old))
        self._cache[key] = proj
        while len(self._cache) > 1 and self._nbytes > self.cache_bytes:
            self._nbytes -= _nbytes(self._cache.popitem(last=False)[1])

    def _tile(self, ty: int, tx: int) -> torch.Tensor:
        with self._lock:
            key = (ty, tx)
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            proj = self._encode_window(ty, ty + 1, tx, tx + 1)[key]
            self._store(key, proj)
            self.tiles_encoded += 1
            return proj

    def _windows(self, ty0: int, ty1: int, tx0: int, tx1: int):
        """Split a range of tiles into encoder windows of at most ``window_px`` input pixels
        (halo included; a single tile is always allowed)."""
        t, halo = self.tile, self.halo
        rows = max(1, min(ty1 - ty0, (int(self.window_px ** 0.5) - 2 * halo) // t))
        cols = max(1, min(tx1 - tx0, (self.window_px // (rows * t + 2 * halo) - 2 * halo) // t))
        for a in range(ty0, ty1, rows):
            for b in range(tx0, tx1, cols):
                yield a, min(a + rows, ty1), b, min(b + cols, tx1)

    def _prefetch_latents(self, y0: int, y1: int, x0: int, x1: int, should_stop=None) -> int:
        """Encode the missing tiles under latent rows [y0, y1) and columns [x0, x1), grouped
        into windows so that each window pays the encoder halo once. Returns tiles encoded."""
        t = self.tile
        ty0, ty1, tx0, tx1 = y0 // t, (y1 - 1) // t + 1, x0 // t, (x1 - 1) // t + 1
        done = 0
        with self._lock:
            for wy0, wy1, wx0, wx1 in self._windows(ty0, ty1, tx0, tx1):
                if should_stop is not None and should_stop():
                    break
                missing = [(a, b) for a in range(wy0, wy1) for b in range(wx0, wx1) if (a, b) not in self._cache]
                if not missing:
                    continue
                # shrink the window to the bounding box of its missing tiles
                a0, a1 = min(k[0] for k in missing), max(k[0] for k in missing) + 1
                b0, b1 = min(k[1] for k in missing), max(k[1] for k in missing) + 1
                for key, proj in self._encode_window(a0, a1, b0, b1).items():
                    if key not in self._cache:  # keep what a render may already have used
                        self._store(key, proj)
                        done += 1
        self.tiles_encoded += done
        return done

    def prefetch(self, region=None, *, should_stop=None) -> int:
        """Encode now the latents that rendering ``region`` (``(top, left, bottom, right)`` in
        input pixel-edge units; None for the whole image) will need, in as few encoder windows
        as ``window_px`` allows. Renders call this themselves block by block; calling it for a
        large area first saves the halo that many small windows would each pay. Cached tiles
        are kept as they are. An area whose latents exceed half the cache is not prefetched
        (its first tiles would be evicted before they are used; renders then encode as they
        go). ``should_stop()`` is asked before each window. Returns the number of tiles encoded."""
        h, w = self.shape
        top, left, bottom, right = (0, 0, h, w) if region is None else region
        # one latent of margin: the local ensemble reaches the neighbouring latent
        y0, y1 = max(0, int(np.floor(top)) - 1), min(h, int(np.ceil(bottom)) + 1)
        x0, x1 = max(0, int(np.floor(left)) - 1), min(w, int(np.ceil(right)) + 1)
        if y1 <= y0 or x1 <= x0 or self.latent_bytes(y1 - y0, x1 - x0) > self.cache_bytes // 2:
            return 0
        return self._prefetch_latents(y0, y1, x0, x1, should_stop)

    def cached_bytes(self) -> int:
        """Bytes held by the latent cache."""
        return self._nbytes

    def latents(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Projected latents of rows [y0, y1) and columns [x0, x1), channels last:
        (y1-y0, x1-x0, hidden)."""
        t = self.tile
        self._prefetch_latents(y0, y1, x0, x1)
        rows = []
        for ty in range(y0 // t, (y1 - 1) // t + 1):
            cols = []
            for tx in range(x0 // t, (x1 - 1) // t + 1):
                p = self._tile(ty, tx)
                cols.append(p[max(y0 - ty * t, 0): y1 - ty * t, max(x0 - tx * t, 0): x1 - tx * t])
            rows.append(torch.cat(cols, 1) if len(cols) > 1 else cols[0])
        return torch.cat(rows, 0) if len(rows) > 1 else rows[0]

    # -- rendering -----------------------------------------------------------------------
    def cell(self, region, shape, mode="on") -> tuple[float, float]:
        """Cell size in [-1, 1] units for sampling ``region`` on ``shape`` (see ``CELL_MODES``).

        ``mode`` may also be an explicit ``(cell_y, cell_x)`` in [-1, 1] units, returned as is:
        rendering a sub-grid (every other sample, say) with the cell of the full grid gives the
        full grid's values at those samples (up to float rounding of the coordinates, ~1e-6)."""
        if isinstance(mode, (tuple, list)):
            if len(mode) != 2 or not all(np.isfinite(c) and c > 0 for c in mode):
                raise ValueError(f"an explicit cell must be two positive sizes (cell_y, cell_x), got {mode!r}")
            return float(mode[0]), float(mode[1])
        if mode not in CELL_MODES:
            raise ValueError(f"cell mode {mode!r} is not one of {', '.join(CELL_MODES)}")
        (h, w), (top, left, bottom, right) = self.shape, region
        step = ((bottom - top) / shape[0], (right - left) / shape[1])  # input pixels per sample
        if mode == "off":
            return 2 / h, 2 / w  # the cell of the input grid itself: density-independent
        cell = [2 * s / n for s, n in zip(step, (h, w))]
        if mode == "clamp":  # never finer than at x4, the top of the training range
            cell = [c * max(1 / s / 4, 1.0) for c, s in zip(cell, step)]
        return cell[0], cell[1]

    def render(self, region=None, shape=None, *, cell="on", progress=None, should_stop=None,
               out: np.ndarray | None = None) -> np.ndarray:
        """Evaluate ``region`` on a ``shape`` grid; returns float32 (rows, cols, 3) in [0, 1].

        ``cell`` is a mode of ``CELL_MODES`` or an explicit size (see :meth:`cell`).
        progress(done, total) is called after each output block; if ``should_stop()`` turns
        true, rendering stops and the partial array is returned (its rest left unchanged).
        """
        h, w = self.shape
        region = tuple(float(v) for v in (region if region is not None else (0, 0, h, w)))
        shape = tuple(int(v) for v in (shape if shape is not None else (h, w)))
        if len(region) != 4 or not (region[2] > region[0] and region[3] > region[1]):
            raise ValueError(f"region must be (top, left, bottom, right) with bottom > top and right > left, got {region}")
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape must be (rows, cols) of positive integers, got {shape}")
        net, dev = self.model.net, self.model.device
        shifts, eps = net.shifts()
        yc, ytab = _axis(h, region[0], region[2], shape[0], [s[0] for s in shifts], eps, dev)
        xc, xtab = _axis(w, region[1], region[3], shape[1], [s[1] for s in shifts], eps, dev)
        wc, wcell = net.coord_weights()
        bias = 0
        if wcell is not None:
            cy, cx = self.cell(region, shape, cell)
            bias = (torch.tensor([cy * h, cx * w], device=dev, dtype=wc.dtype) @ wcell.t())
        if out is None:
            out = np.empty(shape + (3,), np.float32)
        b = self.block
        blocks = [(r, c) for r in range(0, shape[0], b) for c in range(0, shape[1], b)]
        ahead = (int(max(i.max() for i, _ in xtab.values())) + 1, self._ahead_cols(b, shape, region))
        with torch.inference_mode():
            for k, (r0, c0) in enumerate(blocks):
                if should_stop is not None and should_stop():
                    break
                rs, cs = slice(r0, min(r0 + b, shape[0])), slice(c0, min(c0 + b, shape[1]))
                val = self._block(ytab, xtab, rs, cs, shifts, wc, bias, ahead)
                if net.bilinear_residual:
                    val = val + self._bilinear(yc[rs], xc[cs])
                out[rs, cs] = (val * 0.5 + 0.5).clamp_(0, 1).cpu().numpy()
                if progress is not None:
                    progress(k + 1, len(blocks))
        return out

    def latent_bytes(self, rows: float, cols: float) -> int:
        """Cache bytes of the projected latents of ``rows`` x ``cols`` input pixels."""
        d = self.model.net.imnet.linears[0].out_features
        return int(rows * cols * d * (torch.finfo(self.model.dtype).bits // 8))

    def _ahead_cols(self, block: int, shape, region) -> int:
        """Latent columns to encode ahead of a block, along its row of blocks: as many as fit
        in half the cache for the rows that row of blocks reads."""
        t = self.tile
        rows_in = block * (region[2] - region[0]) / shape[0] + 3  # latent rows under a block row
        band = -(-int(rows_in) // t) * t + t  # whole tiles, one more for a band across a boundary
        return max(t, (self.cache_bytes // 2) // self.latent_bytes(band, 1))

    def _block(self, ytab, xtab, rs, cs, shifts, wc, bias, ahead=None) -> torch.Tensor:
        """Decoded values (r, c, 3) on the [-1, 1] scale for one output block. ``ahead``
        ``(right, cols)``: also encode up to ``cols`` latent columns to the right of the block
        (not past ``right``) in the same encoder windows, for the blocks that follow."""
        net = self.model.net
        iys = {s: t[0][rs] for s, t in ytab.items()}
        ixs = {s: t[0][cs] for s, t in xtab.items()}
        ly0, ly1 = min(int(i.min()) for i in iys.values()), max(int(i.max()) for i in iys.values()) + 1
        lx0, lx1 = min(int(i.min()) for i in ixs.values()), max(int(i.max()) for i in ixs.values()) + 1
        if ahead is not None:
            self._prefetch_latents(ly0, ly1, lx0, max(lx1, min(ahead[0], lx0 + ahead[1])))
        lat = self.latents(ly0, ly1, lx0, lx1)
        rel_y = {s: (iys[s] - ly0, ytab[s][1][rs]) for s in iys}
        rel_x = {s: (ixs[s] - lx0, xtab[s][1][cs]) for s in ixs}
        hidden = _first_layer(lat, rel_y, rel_x, shifts, wc, bias, relu=len(net.imnet.linears) > 1)
        m, r, c, d = hidden.shape
        preds = net.tail_from_hidden(hidden.view(-1, d)).float().view(m, r, c, -1)
        areas = [(rel_y[sy][1][:, None] * rel_x[sx][1][None, :]).abs() + 1e-9 for sy, sx in shifts]
        if len(shifts) == 4:
            areas = areas[::-1]  # each member is weighted by the diagonally opposite area
        tot = sum(areas)
        return sum(p * (a / tot)[..., None] for p, a in zip(preds, areas))

    def _bilinear(self, yc: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
        """Bilinear interpolation of the input at the grid (border padding), [-1, 1] scale."""
        (h, w), dev = self.shape, self.model.device
        y0, y1, ty = _bilinear_axis(yc, h)
        x0, x1, tx = _bilinear_axis(xc, w)
        a, b = int(y0.min()), int(y1.max()) + 1
        c, d = int(x0.min()), int(x1.max()) + 1
        img = self._input(a, b, c, d)[0].float().permute(1, 2, 0)  # (rows, cols, 3)
        y0, y1, x0, x1 = y0 - a, y1 - a, x0 - c, x1 - c
        ty, tx = ty[:, None, None].to(dev), tx[None, :, None].to(dev)
        top = img[y0][:, x0] * (1 - tx) + img[y0][:, x1] * tx
        bot = img[y1][:, x0] * (1 - tx) + img[y1][:, x1] * tx
        return top * (1 - ty) + bot * ty
