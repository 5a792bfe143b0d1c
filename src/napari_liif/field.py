"""An encoded image: a continuous function that can be rendered on any sample grid.

``EncodedField`` is "set once, query many". It owns the geometry of rendering: the latent
tiles, their cache and the encoder windows (:mod:`napari_liif.latents`), and the sample grid
(:mod:`napari_liif.grid`); the model's *family* (:mod:`napari_liif.models.family`) owns the
math. Every consumer goes through one decode loop, :meth:`EncodedField.render_grid`:
``render`` (a rectangle on a regular grid), dask chunks (the whole image's grid, sliced to the
chunk and shifted into its window) and live-zoom tiles and previews (a tile's grid, and its
``[::2, ::2]``).

The loop walks the grid in output blocks of ``block`` samples (64 on a CPU, where it keeps a
block's activations in reach of the caches; 256 on a GPU; a family may ask for its own, see
``Family.block_side``), cell by cell as the tile plan
says, so memory stays bounded for any output size and only the latent tiles under the grid
are ever encoded. Everything it needs per block is known on the host before the block is
queued: the latent and input ranges come from the grid's host-side tables, and the tables
themselves are copied to the device once per render, so a GPU never waits on the host in the
loop; results come back through pinned buffers without blocking.

See docs/performance.md for how the LIIF family makes its part fast without changing the
result, and :mod:`napari_liif.grid` for the coordinate conventions.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from .device import exact_fp32
from .grid import CELL_MODES, Axis, SampleGrid, cell_size
from .latents import WINDOW_PX, LatentTiles, Source
from .models.family import Block
from .threads import render_pool, render_workers
from .validate import check_region, check_shape

__all__ = ["CELL_MODES", "WINDOW_PX", "EncodedField", "Source", "compatible", "default_block", "render_together"]

#: output block side on a CPU: 64 keeps a block's activations (16 MiB in fp32) in reach of the
#: caches and is the fastest measured (32-128 tried)
CPU_BLOCK = 64
#: on a GPU, per-call overhead dominates: 256 (268 MB of fp32 activations per hidden layer;
#: chosen, not yet measured on a GPU)
GPU_BLOCK = 256
#: decoded blocks in flight on CUDA (each copied out through its own pinned buffer)
STAGING_DEPTH = 3


def default_block(device: torch.device | None, family=None) -> int:
    """Output block side for a device (None: geometry only, the CPU's), or the one the
    model's ``family`` asks for there (:meth:`~napari_liif.models.family.Family.block_side`)."""
    side = None if family is None or device is None else family.block_side(device)
    if side is not None:
        return int(side)
    return CPU_BLOCK if device is None or device.type == "cpu" else GPU_BLOCK


@dataclass
class _DeviceAxis:
    """An axis's tables on the device, copied once per render."""

    index: dict
    rel: dict
    tap0: torch.Tensor
    tap1: torch.Tensor
    frac: torch.Tensor
    runs: dict

    @classmethod
    def of(cls, axis: Axis, device: torch.device, spans=()) -> _DeviceAxis:
        """The tables on ``device``, with the :class:`~napari_liif.grid.Runs` of each block
        ``(a, b)`` in ``spans`` (built on the host, copied with the tables)."""
        def move(t):
            return t.to(device)

        return cls({k: move(v) for k, v in axis.index.items()}, {k: move(v) for k, v in axis.rel.items()},
                   move(axis.tap0), move(axis.tap1), move(axis.frac),
                   {(a, b): axis.runs(a, b).to(device) for a, b in spans})

    def block(self, a: int, b: int, lo: int) -> dict:
        """{shift: (index - lo, rel)} for samples [a, b): indices into products from latent ``lo``."""
        return {s: (i[a:b] - lo, self.rel[s][a:b]) for s, i in self.index.items()}


def _moved(runs, lo: int):
    """A block's runs with their host-side latent starts measured from ``lo``, as its indices."""
    return None if runs is None else runs.moved(lo)


class _Output:
    """Puts decoded blocks (on the [0, 1] scale) into the host array ``out``: directly from a
    CPU tensor; on CUDA through a ring of pinned buffers filled by non-blocking copies, each
    block waited for only when its buffer comes round again (or at the end)."""

    def __init__(self, out: np.ndarray, device: torch.device, block: int):
        self.out, self.device = out, device
        self.cuda = device.type == "cuda"
        self.pending: deque = deque()
        if self.cuda:
            n = block * block * out.shape[-1]
            self.bufs = [torch.empty(n, dtype=torch.float32, pin_memory=True) for _ in range(STAGING_DEPTH)]
            self.k = 0

    def put(self, rs: slice, cs: slice, val: torch.Tensor) -> None:
        if not self.cuda:
            self.out[rs, cs] = val.cpu().numpy()
            return
        if len(self.pending) == STAGING_DEPTH:
            self._drain()
        buf = self.bufs[self.k % STAGING_DEPTH][: val.numel()].view(val.shape)
        self.k += 1
        buf.copy_(val, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.pending.append((rs, cs, buf, done))

    def _drain(self) -> None:
        rs, cs, buf, done = self.pending.popleft()
        done.synchronize()
        self.out[rs, cs] = buf.numpy()

    def finish(self) -> np.ndarray:
        while self.pending:
            self._drain()
        return self.out


class EncodedField(LatentTiles):
    """An encoded image. Build it with ``LiifModel.encode``; then ``render`` anywhere, or
    ``render_grid`` any :class:`~napari_liif.grid.SampleGrid`.

    ``model`` may be None for geometry only (``cell``, ``grid``): nothing can be rendered.
    """

    def __init__(self, model, source: Source, shape: tuple[int, int], *, tile: int = 256,
                 cache_bytes: int = 1 << 30, block: int | None = None, window_px: int | None = None,
                 workers: int | None = None):
        super().__init__(model, source, shape, tile=tile, cache_bytes=cache_bytes, window_px=window_px)
        self.block = int(block) if block is not None else default_block(None if model is None else model.device, self.family)
        #: block workers of a render (None: :func:`napari_liif.threads.render_workers` of the
        #: rendering thread); each runs with one intra-op thread
        self.workers = workers

    # -- grids ----------------------------------------------------------------------------
    def cell(self, region, shape, mode="on") -> tuple[float, float]:
        """Cell size in [-1, 1] units for sampling ``region`` on ``shape`` (see
        :func:`napari_liif.grid.cell_size`; ``mode`` one of ``CELL_MODES``)."""
        return cell_size(self.shape, region, shape, mode)

    def grid(self, region=None, shape=None, cell="on") -> SampleGrid:
        """The regular grid of ``shape`` samples over ``region`` (``(top, left, bottom,
        right)`` in input pixel-edge units; None: the whole image at its own size), with the
        ``cell`` of that grid (a mode of ``CELL_MODES``)."""
        region, shape = check_region(region, self.shape), check_shape(shape, self.shape)  # ValueErrors naming them
        members, eps = self.family.shifts()
        return SampleGrid.regular(self.shape, region, shape, members, eps, cell)

    # -- rendering ------------------------------------------------------------------------
    def render(self, region=None, shape=None, *, cell="on", progress=None, should_stop=None,
               out: np.ndarray | None = None) -> np.ndarray:
        """Evaluate ``region`` on a ``shape`` grid; returns float32 (rows, cols, 3) in [0, 1].

        The same as ``render_grid(grid(region, shape, cell))``; see there for ``progress``,
        ``should_stop`` and ``out``.
        """
        return self.render_grid(self.grid(region, shape, cell), progress=progress, should_stop=should_stop, out=out)

    def render_grid(self, grid: SampleGrid, *, progress=None, should_stop=None,
                    out: np.ndarray | None = None) -> np.ndarray:
        """Values at every sample of ``grid``: float32 (rows, cols, 3) in [0, 1].

        The one decode loop of the engine (:func:`render_together` with this field alone). The
        grid's latent indices must lie in this field (a window's field takes the whole image's
        grid ``shifted`` to the window's origin). ``progress(done, total)`` is called after each
        output block; if ``should_stop()`` turns true, rendering stops and the partial array is
        returned (its rest left unchanged). ``out``: an array of that shape to fill instead of a
        new one.
        """
        outs = None if out is None else [out]
        return render_together([self], grid, progress=progress, should_stop=should_stop, outs=outs)[0]

    def _check(self, grid: SampleGrid, rows, cols) -> None:
        members, _ = self.family.shifts()
        if tuple(tuple(m) for m in members) != grid.members:
            raise ValueError(f"the grid's ensemble {grid.members} is not this model's {tuple(members)}; "
                             "build the grid with EncodedField.grid")
        (h, w) = self.shape
        ylo, yhi = min(r[0] for r in rows), max(r[1] for r in rows)
        xlo, xhi = min(c[0] for c in cols), max(c[1] for c in cols)
        if ylo < 0 or xlo < 0 or yhi > h or xhi > w:
            raise ValueError(f"the grid reads latent rows {ylo}..{yhi - 1} and columns {xlo}..{xhi - 1}, outside "
                             f"this field's {h} x {w}; shift a whole-image grid into a window with grid.shifted(y0, x0)")

    def _decode(self, grid: SampleGrid, dy: _DeviceAxis, dx: _DeviceAxis, box, lat_rows, lat_cols, state):
        """Decoded values (r, c, 3) on the [-1, 1] scale of one output block ``box``."""
        fam = self.family
        (r0, r1, c0, c1), (ly0, ly1), (lx0, lx1) = box, lat_rows, lat_cols
        # normally cached by the plan; after an eviction (a cache under a block's latents),
        # only the part this block reads is encoded again
        prods = self.products(ly0, ly1, lx0, lx1, grid.rel_cell if fam.cell_dependent else None, whole=False,
                              transient=True)
        block = Block(grid.members, dy.block(r0, r1, ly0), dx.block(c0, c1, lx0), grid.rel_cell,
                      row_runs=_moved(dy.runs.get((r0, r1)), ly0), col_runs=_moved(dx.runs.get((c0, c1)), lx0))
        if fam.needs_bilinear:
            block.bilinear = self._bilinear(grid, dy, dx, box)
        return fam.decode_block(prods, block, state)

    def _bilinear(self, grid: SampleGrid, dy: _DeviceAxis, dx: _DeviceAxis, box) -> torch.Tensor:
        """Bilinear interpolation of the input at a block's samples (border padding), float32
        on the [-1, 1] scale whatever the model's precision, from the tiles' cached input."""
        r0, r1, c0, c1 = box
        a, b = grid.y.tap_range(r0, r1)
        c, d = grid.x.tap_range(c0, c1)
        img = self.image(a, b, c, d)
        y0, y1, x0, x1 = dy.tap0[r0:r1] - a, dy.tap1[r0:r1] - a, dx.tap0[c0:c1] - c, dx.tap1[c0:c1] - c
        ty, tx = dy.frac[r0:r1][:, None, None], dx.frac[c0:c1][None, :, None]
        row0, row1 = img.index_select(0, y0), img.index_select(0, y1)
        top = row0.index_select(1, x0) * (1 - tx) + row0.index_select(1, x1) * tx
        bot = row1.index_select(1, x0) * (1 - tx) + row1.index_select(1, x1) * tx
        return top * (1 - ty) + bot * ty


def compatible(fields) -> bool:
    """Whether ``fields`` can be rendered in one :func:`render_together` call: one model, one
    shape, and the same tiles, cache and output blocks (so one plan serves them all)."""
    a = fields[0]
    return all(f.model is a.model and f.shape == a.shape and f.tile == a.tile and f.cache_bytes == a.cache_bytes
               and f.block == a.block and f.workers == a.workers for f in fields[1:])


def render_together(fields, grid: SampleGrid, *, progress=None, should_stop=None, outs=None) -> list[np.ndarray]:
    """Every sample of ``grid`` in each of ``fields`` (:func:`compatible` ones: e.g. the
    channels of one image): a list of float32 (rows, cols, 3) arrays in [0, 1], each exactly
    what that field's own :meth:`EncodedField.render_grid` gives.

    One call for all: the grid's tables go to the device once, and the output blocks of every
    field share one queue, so a few blocks per field keep every worker busy (a 128 x 128 tile
    of one field is one block: on a CPU, one core). ``progress``, ``should_stop``: as for
    ``render_grid``, counting the blocks of all fields; ``outs``: arrays to fill, one per field.
    """
    fields = list(fields)
    if not fields or not compatible(fields):
        raise ValueError("fields rendered together need one model, one shape and the same tiles and cache; "
                         "render them one by one")
    first, shape = fields[0], grid.shape + (3,)
    outs = [np.empty(shape, np.float32) for _ in fields] if outs is None else list(outs)
    if len(outs) != len(fields):
        raise ValueError(f"{len(outs)} output arrays for {len(fields)} fields; give one per field")
    for out in outs:
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}; this grid renders {shape}")
    if min(grid.shape) == 0:
        return outs
    b = first.block
    row_blocks = [(r, min(r + b, grid.shape[0])) for r in range(0, grid.shape[0], b)]
    col_blocks = [(c, min(c + b, grid.shape[1])) for c in range(0, grid.shape[1], b)]
    rows = [grid.y.latent_range(a, e) for a, e in row_blocks]
    cols = [grid.x.latent_range(a, e) for a, e in col_blocks]
    first._check(grid, rows, cols)
    stopped = []

    def stop() -> bool:
        if not stopped and should_stop is not None and should_stop():
            stopped.append(True)
        return bool(stopped)

    fam, dev = first.family, first.model.device
    runs = fam.wants_runs
    dy = _DeviceAxis.of(grid.y, dev, row_blocks if runs else ())
    dx = _DeviceAxis.of(grid.x, dev, col_blocks if runs else ())
    sinks = [_Output(out, dev, b) for out in outs]
    workers = render_workers(dev) if first.workers is None else max(1, int(first.workers))
    pool = render_pool(workers) if workers > 1 and dev.type == "cpu" else None
    total, done = len(row_blocks) * len(col_blocks) * len(fields), 0
    with torch.inference_mode(), exact_fp32(dev, first.model.dtype):
        state = fam.prepare(grid.rel_cell, dev)

        def job(k: int, i: int, j: int) -> None:
            (r0, r1), (c0, c1) = row_blocks[i], col_blocks[j]
            with torch.inference_mode():  # per thread: a pool worker needs its own
                val = fields[k]._decode(grid, dy, dx, (r0, r1, c0, c1), rows[i], cols[j], state)
                sinks[k].put(slice(r0, r1), slice(c0, c1), (val * 0.5 + 0.5).clamp_(0, 1))

        for cell in first.plan(rows, cols):  # the fields share a geometry: one plan for all
            if stop():
                break
            for fld in fields:
                fld.encode_rect(*cell.rect, whole=cell.whole, should_stop=stop)
            blocks = [(k, i, j) for i in cell.rows for j in cell.cols for k in range(len(fields))]
            for _ in _run_blocks(job, blocks, pool, stop):
                done += 1
                if progress is not None:
                    progress(done, total)
    return [sink.finish() for sink in sinks]


def _run_blocks(job, blocks, pool, stop):
    """Run ``job(*b)`` for each ``b`` of ``blocks``, here or on ``pool``; yields once per
    finished block, in order. After ``stop()`` turns true no further block starts."""
    if pool is None:
        for b in blocks:
            if stop():
                return
            job(*b)
            yield
        return
    halt = threading.Event()

    def guarded(b):
        if not halt.is_set():
            job(*b)

    futures = [pool.submit(guarded, b) for b in blocks]
    try:
        for fut in futures:
            fut.result()
            if stop():
                halt.set()
                return
            yield
    finally:  # stopped, failed or abandoned: no new block starts; wait for the running ones
        halt.set()
        for fut in futures:
            fut.cancel()
        for fut in futures:
            if not fut.cancelled():
                fut.exception()

