"""The sample grid: where a render samples the continuous image, and what each sample reads.

A :class:`SampleGrid` is separable: every sample ``(i, j)`` sits at row coordinate ``y[i]`` and
column coordinate ``x[j]`` (pixel centres of the render, in [-1, 1] units of the *frame*, the
image the coordinates refer to). For each ensemble shift, each axis has a table of the latent
index each sample reads and its relative coordinate, and a table of its bilinear taps; the
grid also holds the render's cell. Everything is computed once, on the host, as the official
LIIF code computes it (``make_coord``, the nearest lookup with its 1e-6 push, clamping).

Grids are values: ``grid[r0:r1, c0:c1]`` and ``grid[::2, ::2]`` are the same samples with the
same cell (a sub-grid renders exactly the samples of the full one), and
``grid.shifted(oy, ox)`` moves the latent and tap indices into a window whose top-left pixel
is ``(oy, ox)`` (a dask chunk encodes only its window, but keeps the whole image's grid).

Coordinates: ``region = (top, left, bottom, right)`` in input *pixel-edge* units, the whole
image being ``(0, 0, H, W)``; pixel ``i`` covers ``[i, i + 1]``. Sample ``(i, j)`` of a grid of
shape ``(rows, cols)`` sits at the centre of its cell: ``top + (i + 0.5) * (bottom - top) / rows``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .constants import CELL_MODES
from .models.family import Runs
from .models.liif import axis_centres, nearest_latent

__all__ = ["CELL_MODES", "Axis", "Runs", "SampleGrid", "cell_size", "group_runs"]

#: the longest piece :meth:`Axis.runs` cuts a run of samples into
RUN_CAP = 8


def cell_size(frame: tuple[int, int], region, shape, mode="on") -> tuple[float, float]:
    """Cell size in [-1, 1] units for sampling ``region`` of a ``frame`` (H, W) on ``shape``.

    ``mode``: ``"on"`` the render's own sample spacing (the official demo's ``2 / H_out`` for a
    whole image), ``"off"`` the input pixel (density-independent), ``"clamp"`` as ``on`` but
    never finer than at x4 (the top of the training range; LTE and LMF do this). ``mode`` may
    also be an explicit ``(cell_y, cell_x)`` in [-1, 1] units, returned as is.
    """
    if isinstance(mode, (tuple, list)):
        if len(mode) != 2 or not all(np.isfinite(c) and c > 0 for c in mode):
            raise ValueError(f"an explicit cell must be two positive sizes (cell_y, cell_x), got {mode!r}")
        return float(mode[0]), float(mode[1])
    if mode not in CELL_MODES:
        raise ValueError(f"cell mode {mode!r} is not one of {', '.join(CELL_MODES)}")
    (h, w), (top, left, bottom, right) = frame, region
    step = ((bottom - top) / shape[0], (right - left) / shape[1])  # input pixels per sample
    if mode == "off":
        return 2 / h, 2 / w  # the cell of the input grid itself: density-independent
    cell = [2 * s / n for s, n in zip(step, (h, w))]
    if mode == "clamp":  # never finer than at x4, the top of the training range
        cell = [c * max(1 / s / 4, 1.0) for c, s in zip(cell, step)]
    return cell[0], cell[1]


def group_runs(indices, cap: int = RUN_CAP) -> Runs:
    """:class:`Runs` of samples whose latent ``indices`` (one (k,) int64 tensor per shift, on
    the host) are all equal. The piece length ``n <= cap`` is the one that minimises
    ``pieces * (2 n + 1)``: slots, plus half a slot per piece for its per-latent values.
    ``start`` is set when every shift's pieces read consecutive latents (see :class:`Runs`)."""
    idx = torch.stack([torch.as_tensor(i).cpu() for i in indices])
    k = idx.shape[1]
    cut = torch.ones(k, dtype=torch.bool)
    cut[1:] = (idx[:, 1:] != idx[:, :-1]).any(0)
    starts = torch.nonzero(cut)[:, 0]
    lengths = torch.diff(starts, append=torch.tensor([k]))

    def cost(n: int) -> tuple[int, int]:
        return int(((lengths + n - 1) // n).sum()) * (2 * n + 1), -n

    n = min(range(1, min(cap, int(lengths.max())) + 1), key=cost)
    per_run = (lengths + n - 1) // n
    run = torch.repeat_interleave(torch.arange(len(starts)), per_run)
    nth = torch.arange(len(run)) - torch.repeat_interleave(per_run.cumsum(0) - per_run, per_run)
    first = starts[run] + nth * n
    last = torch.minimum(first + n, starts[run] + lengths[run]) - 1
    slot = torch.minimum(first[None, :] + torch.arange(n)[:, None], last[None, :])
    piece = torch.repeat_interleave(torch.arange(len(first)), last - first + 1)
    unpad = (torch.arange(k) - first[piece]) * len(first) + piece
    at = idx[:, first]  # (shifts, pieces): the latent each piece reads for each shift
    steps = torch.arange(len(first))
    start = tuple(int(v) for v in at[:, 0]) if bool((at == at[:, :1] + steps).all()) else None
    return Runs(n, first, slot, unpad, start)


@dataclass(frozen=True)
class Axis:
    """One axis of a grid, host-side (CPU tensors).

    Attributes
    ----------
    n : int
        Latents (input pixels) of the frame along this axis; relative coordinates are in
        units of ``2 / n``.
    coords : torch.Tensor
        (k,) float32 sample coordinates in [-1, 1] of the frame.
    index, rel : dict
        Per shift ``s``: (k,) int64 latent index (in the coordinates of the field being
        rendered: frame index minus ``origin``) and (k,) float32 relative coordinate
        ``(coord - latent centre) * n``.
    tap0, tap1, frac : torch.Tensor
        Bilinear interpolation of the input (border padding, ``align_corners=False``): the two
        pixel indices (int64, field coordinates) and the weight of ``tap1`` (float32).
    origin : int
        How far the indices were shifted (see :meth:`SampleGrid.shifted`).
    """

    n: int
    coords: torch.Tensor
    index: dict
    rel: dict
    tap0: torch.Tensor
    tap1: torch.Tensor
    frac: torch.Tensor
    origin: int = 0

    @classmethod
    def regular(cls, n_in: int, lo: float, hi: float, n_out: int, shifts, eps: float) -> Axis:
        """``n_out`` samples at the centres of equal cells of [lo, hi] (pixel-edge units) on
        an axis of ``n_in`` latents, with the tables of each shift in ``shifts``."""
        c = axis_centres(n_out, -1 + 2 * lo / n_in, -1 + 2 * hi / n_in)
        centres = axis_centres(n_in)
        index, rel = {}, {}
        for s in sorted(set(shifts)):
            i = nearest_latent(c, n_in, s, eps)
            index[s], rel[s] = i, (c - centres[i]) * n_in
        p = (((c + 1) * n_in - 1) / 2).clamp(0, n_in - 1)
        t0 = p.floor().long()
        t1 = (t0 + 1).clamp(max=n_in - 1)
        return cls(n_in, c, index, rel, t0, t1, p - t0)

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, s: slice) -> Axis:
        if not isinstance(s, slice) or (s.step is not None and s.step < 1):
            raise TypeError(f"a grid axis takes a slice with a positive step, got {s!r}")
        return replace(self, coords=self.coords[s], index={k: v[s] for k, v in self.index.items()},
                       rel={k: v[s] for k, v in self.rel.items()}, tap0=self.tap0[s], tap1=self.tap1[s],
                       frac=self.frac[s])

    def shifted(self, o: int) -> Axis:
        """The same samples with every index measured from pixel ``o`` of the frame."""
        o = int(o)
        return replace(self, index={k: v - o for k, v in self.index.items()}, tap0=self.tap0 - o,
                       tap1=self.tap1 - o, origin=self.origin + o)

    def latent_range(self, a: int = 0, b: int | None = None) -> tuple[int, int]:
        """[lo, hi): the latents samples ``a:b`` read, over all shifts (host arithmetic)."""
        parts = [v[a:b] for v in self.index.values()]
        return min(int(p.min()) for p in parts), max(int(p.max()) for p in parts) + 1

    def runs(self, a: int = 0, b: int | None = None, cap: int = RUN_CAP) -> Runs:
        """Samples ``a:b`` grouped into :class:`Runs` (see :func:`group_runs`)."""
        return group_runs([v[a:b] for v in self.index.values()], cap)

    def tap_range(self, a: int = 0, b: int | None = None) -> tuple[int, int]:
        """[lo, hi): the input pixels the bilinear taps of samples ``a:b`` read."""
        return int(self.tap0[a:b].min()), int(self.tap1[a:b].max()) + 1


@dataclass(frozen=True)
class SampleGrid:
    """A separable grid of samples of an encoded image (see the module docstring).

    Build one with :meth:`regular` (or :meth:`napari_liif.field.EncodedField.grid`), slice it
    with ``grid[rows, cols]`` (two slices with positive steps), move it into a window with
    :meth:`shifted`, and render it with :meth:`napari_liif.field.EncodedField.render_grid`.
    """

    y: Axis
    x: Axis
    members: tuple
    cell: tuple[float, float]

    @classmethod
    def regular(cls, frame: tuple[int, int], region, shape, members, eps: float, cell="on") -> SampleGrid:
        """``shape`` samples of ``region`` of a ``frame`` of (H, W) latents; ``members`` and
        ``eps`` are the family's ensemble (``Family.shifts()``); ``cell`` a mode of
        ``CELL_MODES`` or an explicit size (:func:`cell_size`)."""
        (h, w), (top, left, bottom, right) = frame, region
        members = tuple(tuple(m) for m in members)
        y = Axis.regular(h, top, bottom, shape[0], [m[0] for m in members], eps)
        x = Axis.regular(w, left, right, shape[1], [m[1] for m in members], eps)
        return cls(y, x, members, cell_size(frame, region, shape, cell))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.y), len(self.x)

    @property
    def frame(self) -> tuple[int, int]:
        """(H, W) latents of the image the coordinates refer to."""
        return self.y.n, self.x.n

    @property
    def origin(self) -> tuple[int, int]:
        return self.y.origin, self.x.origin

    @property
    def rel_cell(self) -> tuple[float, float]:
        """The cell in latent units, ``(cell_y * H, cell_x * W)`` (LIIF's ``rel_cell``)."""
        return self.cell[0] * self.y.n, self.cell[1] * self.x.n

    def __getitem__(self, key) -> SampleGrid:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise TypeError(f"index a grid with two slices, grid[rows, cols]; got {key!r}")
        return replace(self, y=self.y[key[0]], x=self.x[key[1]])

    def shifted(self, oy: int, ox: int) -> SampleGrid:
        """The same samples, indices measured from pixel ``(oy, ox)``: the grid of a window of
        the image whose top-left pixel is ``(oy, ox)`` (coordinates, relative coordinates and
        the cell stay those of the whole frame)."""
        return replace(self, y=self.y.shifted(oy), x=self.x.shifted(ox))
