"""Latent tiles of an encoded image: lazy encoding in windows, a bounded cache, work plans.

The encoder runs lazily, on the tiles a render needs, several neighbouring tiles in one
encoder *window* of at most about ``window_px`` input pixels, each window with a halo of the
family's ``halo`` pixels (the encoder's receptive radius plus the unfold's reach) so that its
latents equal untiled encoding. For each tile the cache keeps the family's *tile products*
(LIIF: the first-layer projection), channels last, and the tile's input on the [-1, 1] scale
in float32 (for the bilinear residual); for a family whose products depend on the render's
cell, also its *cell products*, keyed by (tile, cell). All of it in one LRU of at most
``cache_bytes``.

Whole-image renders are planned (:meth:`LatentTiles.plan`): the blocks of the grid are walked
cell by cell, a cell being a tile-aligned rectangle of tiles that fits the cache; a cell's
latents are encoded once, in windows, then all its blocks are decoded. A block reads a few
latents past its cell (half a block at most): from neighbouring tiles still cached, or encoded
with the cell's last window as a *partial* tile (the rows or columns it needs), replaced by the
whole tile when its own cell comes. Every tile is thus encoded once per render whatever the
image's shape, where walking rows of blocks across a wide image re-encoded each tile once per
row of blocks (12.9x the pixels of a 512 x 8192 image at x2; now 1.44x, all of it halo).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .device import exact_fp32
from .models.family import Scratch

#: largest encoder window on a CPU, in input pixels with its halo (~362 x 362). Measured on a
#: 2-core EPYC (32 MiB L3; EDSR-baseline, fp32, channels-last, one thread): 88-93 k px/s on
#: 326 x 326 windows and 78 k on 200 x 582, but 57-62 k on windows of 164 k px and more (their
#: 64-channel feature maps no longer fit the cache). Bigger windows would pay less halo (1.29x
#: the pixels for 2 x 2 tiles of 256 instead of 1.62x for one) and lose more in speed (the
#: encoder's time per *useful* pixel is 15-28 % higher). It also bounds the encoder's
#: activation memory (the projection is made tile by tile, never for a whole window).
WINDOW_PX = 1 << 17
#: largest encoder window on a GPU (~1448 x 1448: 1.1x the pixels in halo for EDSR-baseline;
#: its 64-channel fp32 feature maps are 0.5 GB). Chosen, not measured on a GPU yet.
GPU_WINDOW_PX = 1 << 21
Source = Callable[[int, int, int, int], np.ndarray]


def default_window_px(device: torch.device | None) -> int:
    """Encoder window bound for a device: :data:`WINDOW_PX` on a CPU, :data:`GPU_WINDOW_PX` else."""
    return WINDOW_PX if device is None or device.type == "cpu" else GPU_WINDOW_PX


def _piece(e: Entry, rect, image: bool = False) -> tuple:
    """``(y0, y1, x0, x1, data)``: the part of entry ``e`` (its products, or its input image)
    over ``rect = (y0, y1, x0, x1)``, a view."""
    a, b, c, d = rect
    t = e.image if image else e.data
    return a, b, c, d, t[a - e.y0:b - e.y0, c - e.x0:d - e.x0]


def _keep(new: Entry, old: Entry) -> None:
    """Put ``old``'s values into ``new``, which covers it (a whole tile encoded where a view had
    only part of it): what renders have read stays bit for bit as they read it (another window's
    values differ from it by float rounding)."""
    rows, cols = slice(old.y0 - new.y0, old.y1 - new.y0), slice(old.x0 - new.x0, old.x1 - new.x0)
    with torch.inference_mode():  # the entries' tensors were made under it
        new.data[rows, cols] = old.data
        if new.image is not None and old.image is not None:
            new.image[rows, cols] = old.image


def _joined(rect, entry) -> tuple[int, int, int, int]:
    """The bounding box of ``rect`` (y0, y1, x0, x1) and ``entry``'s rectangle (None: ``rect``)."""
    if entry is None:
        return rect
    return min(rect[0], entry.y0), max(rect[1], entry.y1), min(rect[2], entry.x0), max(rect[3], entry.x1)


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


#: side, in latents, of the chunks whose cell products are computed and cached together
CELL_CHUNK = 32


@dataclass
class Entry:
    """Cached products of (part of) one tile: latent rows [y0, y1) x columns [x0, x1) of the
    image, ``data`` (rows, cols, D) channels last, ``image`` the input there (rows, cols, 3)
    float32 on [-1, 1] (tile products only)."""

    y0: int
    y1: int
    x0: int
    x1: int
    data: torch.Tensor
    image: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return _nbytes(self.data) + _nbytes(self.image)

    def covers(self, y0: int, y1: int, x0: int, x1: int) -> bool:
        return self.y0 <= y0 and y1 <= self.y1 and self.x0 <= x0 and x1 <= self.x1


@dataclass
class Cell:
    """A unit of planned work: the block rows and columns to decode, and the latent rectangle
    ``rect = (y0, y1, x0, x1)`` to encode for them first (whole tiles if ``whole``)."""

    rows: list
    cols: list
    rect: tuple[int, int, int, int]
    whole: bool


class LatentTiles:
    """Tiles, windows and the cache of one encoded image (the base of ``EncodedField``).

    ``model`` may be None (geometry only: cells and grids, nothing encoded).
    """

    def __init__(self, model, source: Source, shape: tuple[int, int], *, tile: int = 256,
                 cache_bytes: int = 1 << 30, window_px: int | None = None):
        self.model = model
        self.family = None if model is None else model.family
        self.source = source
        self.shape = (int(shape[0]), int(shape[1]))
        self.tile = int(tile)
        self.cache_bytes = int(cache_bytes)
        device = None if model is None else model.device
        self.window_px = int(window_px) if window_px is not None else default_window_px(device)
        self._cache: OrderedDict[tuple, Entry] = OrderedDict()
        self._nbytes = 0  # bytes in _cache, kept up to date by _store
        self._lock = threading.RLock()
        self.tiles_encoded = 0  # tile products added to the cache, whole or partial (again after an eviction)
        self.pixels_encoded = 0  # input pixels run through the encoder, halos included

    # -- geometry ---------------------------------------------------------------------
    @property
    def halo(self) -> int:
        """Extra input pixels an encoder window needs on each side to equal untiled encoding."""
        return self.family.halo

    def latent_bytes(self, rows: float, cols: float) -> int:
        """Cache bytes of ``rows`` x ``cols`` latents: tile products, cell products of one
        cell (cell-dependent families) and the float32 input."""
        fam = self.family
        per = (fam.tile_channels + fam.cell_channels) * (torch.finfo(self.model.dtype).bits // 8) + 12
        return int(rows * cols * per)

    def cached_bytes(self) -> int:
        """Bytes held by the latent cache."""
        return self._nbytes

    def _tile_rect(self, ty: int, tx: int) -> tuple[int, int, int, int]:
        (h, w), t = self.shape, self.tile
        return ty * t, min(h, ty * t + t), tx * t, min(w, tx * t + t)

    def _tiles(self, y0: int, y1: int, x0: int, x1: int):
        """Tiles meeting latent rows [y0, y1) x columns [x0, x1), with the part of each inside."""
        t = self.tile
        for ty in range(y0 // t, (y1 - 1) // t + 1):
            for tx in range(x0 // t, (x1 - 1) // t + 1):
                a, b, c, d = self._tile_rect(ty, tx)
                yield (ty, tx), (max(a, y0), min(b, y1), max(c, x0), min(d, x1))

    # -- the cache ----------------------------------------------------------------------
    def _store(self, key, entry: Entry) -> None:
        old = self._cache.pop(key, None)
        if old is not None and entry.covers(old.y0, old.y1, old.x0, old.x1):
            _keep(entry, old)
        self._nbytes += entry.nbytes - (0 if old is None else old.nbytes)
        self._cache[key] = entry
        while len(self._cache) > 1 and self._nbytes > self.cache_bytes:
            self._nbytes -= self._cache.popitem(last=False)[1].nbytes

    def _covering(self, key, rect) -> Entry | None:
        entry = self._cache.get(key)
        if entry is None or not entry.covers(*rect):
            return None
        self._cache.move_to_end(key)
        return entry

    # -- encoding -----------------------------------------------------------------------
    def _input(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Source window as (1, 3, h, w) float32 on the [-1, 1] scale, on the model's device."""
        a = np.asarray(self.source(y0, y1, x0, x1), dtype=np.float32)
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.model.device)
        t = t.unsqueeze(-1).expand(-1, -1, 3) if t.ndim == 2 else t
        return ((t.permute(2, 0, 1) - 0.5) / 0.5).unsqueeze(0)

    def _encode(self, y0: int, y1: int, x0: int, x1: int) -> dict:
        """One encoder window for exactly latent rows [y0, y1) x columns [x0, x1) (plus the
        halo): ``{tile: Entry}`` for every tile it meets, each the part inside the rectangle."""
        (h, w), halo, fam = self.shape, self.halo, self.family
        wy0, wy1, wx0, wx1 = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
        dev = self.model.device
        with torch.inference_mode(), exact_fp32(dev, self.model.dtype):
            inp = self._input(wy0, wy1, wx0, wx1)
            enc_in = inp.to(self.model.dtype)
            # channels-last convolutions are ~15 % faster on CPU (oneDNN's native layout), and
            # their output is already the (rows, cols, channels) layout the decoder gathers
            # from; clone, not contiguous: a (1, 3, h, w) view can already count as
            # channels-last while its strides make the convolution pick a size-dependent kernel,
            # so tiles of different sizes would differ by ~1e-6. cuDNN prefers its default.
            enc_in = enc_in.clone(memory_format=torch.channels_last) if dev.type == "cpu" else enc_in.contiguous()
            feat = fam.encode(enc_in)
            # products tile by tile (LIIF's projection has 4x the encoder's channels: for a
            # whole window it would be the largest tensor of all), each with the margin that
            # the family's unfold reads; the margin's own outputs, which see zero padding, are cut
            m = fam.margin
            out = {}
            for key, (a, b, c, d) in self._tiles(y0, y1, x0, x1):
                a, b, c, d = a - wy0, b - wy0, c - wx0, d - wx0
                ea, ec = max(0, a - m), max(0, c - m)
                p = fam.tile_products(feat[:, :, ea: b + m, ec: d + m])[0].permute(1, 2, 0)
                img = inp[0, :, a:b, c:d].permute(1, 2, 0).contiguous()
                out[key] = Entry(a + wy0, b + wy0, c + wx0, d + wx0,
                                 p[a - ea: b - ea, c - ec: d - ec].contiguous(), img)
        self.pixels_encoded += (wy1 - wy0) * (wx1 - wx0)
        return out

    def _window_shape(self, ny: int, nx: int) -> tuple[int, int]:
        """Tiles (rows, cols) per encoder window for a rectangle of ``ny`` x ``nx`` tiles:
        the shape within ``window_px`` that pays the least halo per pixel (1 x 1 always allowed)."""
        t, halo, best = self.tile, self.halo, (1, 1, float("inf"))
        for r in range(1, ny + 1):
            hr = r * t + 2 * halo
            c = min(nx, (self.window_px // hr - 2 * halo) // t)
            if c < 1:
                break
            cost = hr * (c * t + 2 * halo) / (r * c)
            if cost < best[2]:
                best = (r, c, cost)
        return best[0], best[1]

    def encode_rect(self, y0: int, y1: int, x0: int, x1: int, *, whole: bool = True, should_stop=None) -> int:
        """Encode what the cache lacks of latent rows [y0, y1) x columns [x0, x1), in as few
        windows as ``window_px`` allows. ``whole``: each missing tile is encoded whole; else
        tiles at the rectangle's edges only as far as it reaches (partial tiles; a reach of
        less than a tile joins the window next to it rather than paying a halo of its own).
        Entries already there are kept. ``should_stop()`` is asked before each window.
        Returns the number of tile entries added."""
        t = self.tile
        ty0, ty1, tx0, tx1 = y0 // t, (y1 - 1) // t + 1, x0 // t, (x1 - 1) // t + 1
        per_y, per_x = self._window_shape(ty1 - ty0, tx1 - tx0)
        done = 0
        with self._lock:
            ends = (None, None, None, None) if whole else (
                (ty0 + 1) * t - y0, y1 - (ty1 - 1) * t, (tx0 + 1) * t - x0, x1 - (tx1 - 1) * t)
            for a, b in self._spans(ty0, ty1, per_y, ends[0], ends[1]):
                for c, d in self._spans(tx0, tx1, per_x, ends[2], ends[3]):
                    if should_stop is not None and should_stop():
                        return done
                    part = (max(y0, a * t), min(y1, b * t), max(x0, c * t), min(x1, d * t))
                    missing = [(k, r) for k, r in self._tiles(*part) if self._covering(k, r) is None]
                    if not missing:
                        continue
                    if whole:
                        missing = [(k, self._tile_rect(*k)) for k, _ in missing]
                    else:  # a tile's part already there is encoded again with it: the new entry covers it
                        missing = [(k, _joined(r, self._cache.get(k))) for k, r in missing]
                    # the window: the bounding box of what is missing
                    box = (min(r[0] for _, r in missing), max(r[1] for _, r in missing),
                           min(r[2] for _, r in missing), max(r[3] for _, r in missing))
                    for key, entry in self._encode(*box).items():
                        old = self._cache.get(key)
                        # only an entry that covers the old one replaces it (taking its values,
                        # _store): what a render has read is never read differently
                        if old is None or (entry.covers(old.y0, old.y1, old.x0, old.x1)
                                           and not old.covers(entry.y0, entry.y1, entry.x0, entry.x1)):
                            self._store(key, entry)
                            done += 1
        self.tiles_encoded += done
        return done

    def _spans(self, a: int, b: int, per: int, head: int | None, tail: int | None) -> list[tuple[int, int]]:
        """Tiles [a, b) in runs of ``per``; where ``head`` (``tail``), the latents used of the
        first (last) tile, is under a tile, a run of that one tile joins its neighbour."""
        spans = [(p, min(b, p + per)) for p in range(a, b, per)]
        if tail is not None and tail < self.tile and len(spans) > 1 and spans[-1][1] - spans[-1][0] == 1:
            spans[-2:] = [(spans[-2][0], b)]
        if head is not None and head < self.tile and len(spans) > 1 and spans[0][1] - spans[0][0] == 1:
            spans[:2] = [(a, spans[1][1])]
        return spans

    def prefetch(self, region=None, *, whole: bool = True, should_stop=None) -> int:
        """Encode now the latents that rendering ``region`` (``(top, left, bottom, right)`` in
        input pixel-edge units; None for the whole image) will need, in as few encoder windows
        as ``window_px`` allows. Renders plan their own encoding; calling this for a large
        area first (the visible part of a live view) saves the halo that many small windows
        would each pay. ``whole``: encode every tile it meets whole (what later views reuse);
        False: only as far as ``region`` reaches (what a view needs now: for a 1024 x 768 view
        at zoom 4, a window of 87 k input pixels instead of 127 k with tiles of 32). Cached tiles are kept
        as they are. An area whose latents exceed half the cache is not prefetched (its first
        tiles would be evicted before they are used). ``should_stop()`` is asked before each
        window. Returns the number of tiles encoded."""
        h, w = self.shape
        top, left, bottom, right = (0, 0, h, w) if region is None else region
        # one latent of margin: the local ensemble reaches the neighbouring latent
        y0, y1 = max(0, int(np.floor(top)) - 1), min(h, int(np.ceil(bottom)) + 1)
        x0, x1 = max(0, int(np.floor(left)) - 1), min(w, int(np.ceil(right)) + 1)
        if y1 <= y0 or x1 <= x0 or self.latent_bytes(y1 - y0, x1 - x0) > self.cache_bytes // 2:
            return 0
        return self.encode_rect(y0, y1, x0, x1, whole=whole, should_stop=should_stop)

    # -- reading --------------------------------------------------------------------------
    def _tile_entry(self, key, rect) -> Entry:
        entry = self._covering(key, rect)
        if entry is None:  # evicted meanwhile (a cache smaller than a block's latents)
            self.encode_rect(*self._tile_rect(*key))
            entry = self._cache[key]
        return entry

    def _cell_pieces(self, key, rect, rel_cell) -> list:
        """Cell products of ``rect`` (within tile ``key``) as pieces ``(y0, y1, x0, x1, data)``,
        one per chunk of at most ``CELL_CHUNK`` latents a side, each computed once per cell and
        cached: a zoom reruns the cell-dependent work (LM-LIIF's latent MLP) for the latents
        under the view only, not for whole tiles."""
        a, b, c, d = rect
        pieces = []
        for cy in range(a // CELL_CHUNK, (b - 1) // CELL_CHUNK + 1):
            for cx in range(c // CELL_CHUNK, (d - 1) // CELL_CHUNK + 1):
                need = (max(a, cy * CELL_CHUNK), min(b, cy * CELL_CHUNK + CELL_CHUNK),
                        max(c, cx * CELL_CHUNK), min(d, cx * CELL_CHUNK + CELL_CHUNK))
                pieces.append(_piece(self._chunk(key, cy, cx, need, rel_cell), need))
        return pieces

    def _chunk(self, key, cy: int, cx: int, need, rel_cell) -> Entry:
        ckey = key + (rel_cell, cy, cx)
        entry = self._covering(ckey, need)
        if entry is None:
            base = self._tile_entry(key, need)
            y0, y1 = max(base.y0, cy * CELL_CHUNK), min(base.y1, cy * CELL_CHUNK + CELL_CHUNK)
            x0, x1 = max(base.x0, cx * CELL_CHUNK), min(base.x1, cx * CELL_CHUNK + CELL_CHUNK)
            part = base.data[y0 - base.y0: y1 - base.y0, x0 - base.x0: x1 - base.x0]
            with torch.inference_mode():
                data = self._cell_layout(self.family.cell_products(part, rel_cell))
            entry = Entry(y0, y1, x0, x1, data)
            self._store(ckey, entry)
        return entry

    def cell_batch(self, y0: int, y1: int, x0: int, x1: int, rel_cell) -> int:
        """Compute now, in one call of the family's cell products (LM-LIIF: its latent MLP), the
        chunks under latent rows [y0, y1) x columns [x0, x1) that the cache lacks for
        ``rel_cell``, instead of one call per chunk as renders reach them (the latents are
        encoded first: whole tiles where they are missing). Nothing for a family without cell products. Returns the
        latents computed."""
        if self.family is None or not self.family.cell_dependent:
            return 0
        rel, n = tuple(float(v) for v in rel_cell), CELL_CHUNK
        with self._lock:
            self.encode_rect(y0, y1, x0, x1)
            todo = []
            for key, (a, b, c, d) in self._tiles(y0, y1, x0, x1):
                base = self._tile_entry(key, (a, b, c, d))
                for cy in range(a // n, (b - 1) // n + 1):
                    for cx in range(c // n, (d - 1) // n + 1):
                        need = (max(a, cy * n), min(b, cy * n + n), max(c, cx * n), min(d, cx * n + n))
                        if self._covering(key + (rel, cy, cx), need) is None:
                            rect = (max(base.y0, cy * n), min(base.y1, cy * n + n),
                                    max(base.x0, cx * n), min(base.x1, cx * n + n))
                            todo.append((key + (rel, cy, cx), rect, base))
            if not todo:
                return 0
            parts = [base.data[r0 - base.y0:r1 - base.y0, c0 - base.x0:c1 - base.x0].reshape(-1, base.data.shape[-1])
                     for _, (r0, r1, c0, c1), base in todo]
            with torch.inference_mode():
                out = self.family.cell_products(torch.cat(parts, 0), rel)
            for (ckey, (r0, r1, c0, c1), _), data in zip(todo, out.split([p.shape[0] for p in parts])):
                self._store(ckey, Entry(r0, r1, c0, c1, self._cell_layout(data.reshape(r1 - r0, c1 - c0, -1))))
            return int(out.shape[0])

    def _assemble(self, y0: int, y1: int, x0: int, x1: int, pick, scratch: Scratch | None = None) -> torch.Tensor:
        """Latents [y0, y1) x [x0, x1) from the pieces ``pick(key, rect)`` returns for each tile
        (see ``_piece``): the one piece itself when it covers everything, else each piece copied
        once into a new tensor (into ``scratch``'s buffer if given) in the pieces' memory layout
        (channels first where they are stored so, see ``_cell_layout``)."""
        pieces = [p for key, rect in self._tiles(y0, y1, x0, x1) for p in pick(key, rect)]
        if len(pieces) == 1:
            return pieces[0][4]
        t0 = pieces[0][4]
        ch = t0.shape[-1]
        first = ch > 1 and t0.stride(-1) != 1
        shape = (ch, y1 - y0, x1 - x0) if first else (y1 - y0, x1 - x0, ch)
        if scratch is not None:
            out = scratch.take("products", shape, t0.dtype)
        else:
            out = torch.empty(shape, dtype=t0.dtype, device=t0.device)
        view = out.permute(1, 2, 0) if first else out
        for a, b, c, d, t in pieces:
            view[a - y0:b - y0, c - x0:d - x0] = t
        return view

    def _cell_layout(self, data: torch.Tensor) -> torch.Tensor:
        """Cell products (rows, cols, D2) in the memory layout the family reads fastest:
        channels first (a (D2, rows, cols) tensor viewed as (rows, cols, D2)) where it asks
        (``Family.cells_channels_first``), else channels last; contiguous either way."""
        if self.family.cells_channels_first:
            return data.permute(2, 0, 1).contiguous().permute(1, 2, 0)
        return data.contiguous()

    def products(self, y0: int, y1: int, x0: int, x1: int, rel_cell=None, *, whole: bool = True,
                 transient: bool = False) -> torch.Tensor:
        """Products of latent rows [y0, y1) x columns [x0, x1), channels last: (rows, cols, D).
        With ``rel_cell`` and a cell-dependent family, its cell products (rows, cols, D2).
        What the cache lacks is encoded first (whole tiles, or only the part asked for).
        ``transient``: the result may be a per-thread buffer that this thread's next transient
        call overwrites (a block's decoding: no fresh multi-MB tensor per block)."""
        with self._lock:
            self.encode_rect(y0, y1, x0, x1, whole=whole)
            if rel_cell is not None and self.family.cell_dependent:
                rel = tuple(float(v) for v in rel_cell)

                def pick(key, rect):
                    return self._cell_pieces(key, rect, rel)
            else:
                def pick(key, rect):
                    return [_piece(self._tile_entry(key, rect), rect)]
            return self._assemble(y0, y1, x0, x1, pick, Scratch(self.model.device) if transient else None)

    def latents(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Tile products (LIIF: projected latents) of rows [y0, y1) and columns [x0, x1),
        channels last: (y1-y0, x1-x0, D)."""
        return self.products(y0, y1, x0, x1)

    def image(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """Input pixels rows [y0, y1) x columns [x0, x1) as (rows, cols, 3) float32 on the
        [-1, 1] scale, on the model's device: from the cached tiles where they hold them,
        else read from the source (never encoded for it)."""
        with self._lock:
            entries = [self._covering(k, r) for k, r in self._tiles(y0, y1, x0, x1)]
            if any(e is None or e.image is None for e in entries):
                return self._input(y0, y1, x0, x1)[0].permute(1, 2, 0)
            it = iter(entries)

            def pick(key, rect):
                return [_piece(next(it), rect, image=True)]

            return self._assemble(y0, y1, x0, x1, pick)

    # -- planning -------------------------------------------------------------------------
    def _cell_shape(self, ny: int, nx: int, cap: int, reach: int, around: bool) -> tuple[int, int]:
        """Tiles (rows, cols) per cell for a grid over ``ny`` x ``nx`` tiles and a cache of
        ``cap`` tiles: the shape whose windows pay the least halo and reach (a cell spanning an
        axis pays neither along it) among those that fit the cache: with the neighbours' tiles
        its blocks reach into (``around``: one more row and column of tiles), else with room for
        a quarter of the cache of partial tiles."""
        t, halo = self.tile, self.halo

        def over(m: int, n: int) -> float:
            return 1.0 if m >= n else 1 + (2 * halo + reach) / (m * t)

        def fits(m: int, k: int) -> bool:
            return (m + (m < ny)) * (k + (k < nx)) <= cap if around else m * k <= cap * 3 // 4

        shapes = [(1, 1)]
        for m in range(1, ny + 1):
            k = max((k for k in range(1, nx + 1) if fits(m, k)), default=0)
            if k:
                shapes.append((m, k))
        return min(shapes, key=lambda s: (over(s[0], ny) * over(s[1], nx), -s[0] * s[1]))

    @staticmethod
    def _groups(ranges, start: int, size: int, middle: bool) -> list[tuple[int, list[int]]]:
        """Indices of ``ranges`` grouped by the band (of ``size`` latents from ``start``) that
        holds the middle (else the start) of each range, in order; empty bands dropped."""
        groups: dict[int, list[int]] = {}
        for i, (lo, hi) in enumerate(ranges):
            groups.setdefault(((lo + hi) // 2 if middle else lo) - start, []).append(i)
        bands: dict[int, list[int]] = {}
        for off in sorted(groups):
            bands.setdefault(off // size, []).extend(groups[off])
        return sorted(bands.items())

    def plan(self, rows: list[tuple[int, int]], cols: list[tuple[int, int]]) -> list[Cell]:
        """Cells covering every block ``(i, j)``, block row ``i`` reading latent rows
        ``rows[i] = (lo, hi)`` and block column ``j`` latent columns ``cols[j]``.

        One cell (whole tiles) if the latents under all blocks fit in three quarters of the
        cache. Otherwise tile-aligned cells of ``m`` x ``k`` tiles (:meth:`_cell_shape`), each of
        which fits the cache with the tiles it reaches into; a block belongs
        to the cell holding the middle of its latents, and a cell's rectangle reaches as far as
        its blocks read (partial tiles beyond: half a block's latents at most)."""
        t = self.tile
        y0, y1 = min(r[0] for r in rows), max(r[1] for r in rows)
        x0, x1 = min(c[0] for c in cols), max(c[1] for c in cols)
        ny, nx = (y1 - 1) // t - y0 // t + 1, (x1 - 1) // t - x0 // t + 1
        cap = self.cache_bytes // max(1, self.latent_bytes(t, t))  # whole tiles the cache holds
        if ny * nx <= cap * 3 // 4:
            return [Cell(list(range(len(rows))), list(range(len(cols))), (y0, y1, x0, x1), True)]
        reach = max(max(hi - lo for lo, hi in rows), max(hi - lo for lo, hi in cols))
        # a block belongs to the cell holding the middle of its latents, and reaches at most
        # half a block into the cells around it, whose tiles may still be cached; where the
        # cache cannot hold a tile and its neighbours, to the cell holding its first latent,
        # reaching only down and right, into tiles not yet encoded, as partial tiles
        around = (1 + (ny > 1)) * (1 + (nx > 1)) <= cap
        m, k = self._cell_shape(ny, nx, cap, reach // 2 * 2 if around else reach, around)
        ty0, tx0 = y0 // t * t, x0 // t * t
        cells = []
        for band, rg in self._groups(rows, ty0, m * t, around):
            top = min(ty0 + band * m * t, min(rows[i][0] for i in rg))
            bottom = max(rows[i][1] for i in rg)
            for stripe, cg in self._groups(cols, tx0, k * t, around):
                left = min(tx0 + stripe * k * t, min(cols[j][0] for j in cg))
                cells.append(Cell(rg, cg, (top, bottom, left, max(cols[j][1] for j in cg)), False))
        return cells
