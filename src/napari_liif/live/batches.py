"""A view's tiles gathered into few, large engine calls.

Tiles of one source on one lattice that touch (the same rows, consecutive columns; then bands of
such rows with the same columns) form a :class:`Batch`: one rectangle of lattice samples, one
sample grid, rendered in one engine call however many tiles it holds (up to ``max_samples``).
A tile's values are the batch grid's samples at its place (:meth:`Batch.slot`).

The coarse pass of a batch is its samples on even rows and columns (``[::2, ::2]``), a quarter
of them; the fine pass renders the other three quarters (odd rows; even rows' odd columns). Every
tile of a batch starts at an even offset, so a tile's coarse samples are its own ``[::2, ::2]``,
spread over 2 x 2 as its preview (:func:`spread`). No sample is rendered twice.

Batches of different sources over the same samples (the channels of one image) are rendered
together, as :func:`siblings`, in one engine call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .keys import Job


@dataclass(frozen=True)
class Batch:
    """Adjacent tiles of one source rendered by one grid: ``region`` over ``shape`` samples."""

    jobs: tuple[Job, ...]
    region: tuple[float, float, float, float]
    shape: tuple[int, int]

    @property
    def source(self) -> int:
        return self.jobs[0].source

    @property
    def origin(self) -> tuple[int, int]:
        """Lattice row and column of the batch's first sample ((0, 0) off any lattice)."""
        k = self.jobs[0].key
        return (0, 0) if k.lattice is None else (min(j.key.r0 for j in self.jobs), min(j.key.c0 for j in self.jobs))

    def slot(self, job: Job) -> tuple[slice, slice]:
        """Where ``job``'s samples are in the batch's grid."""
        if len(self.jobs) == 1:
            return slice(0, job.shape[0]), slice(0, job.shape[1])
        r, c = self.origin
        k = job.key
        return slice(k.r0 - r, k.r1 - r), slice(k.c0 - c, k.c1 - c)

    @property
    def samples(self) -> int:
        return self.shape[0] * self.shape[1]


def _join(jobs: list[Job], axis: int) -> Batch:
    """A batch of ``jobs`` that tile a rectangle: consecutive along ``axis`` (1: a row of tiles,
    0: rows of tiles); the region runs from the first's leading edge to the last's trailing one."""
    first, last = jobs[0], jobs[-1]
    if axis == 1:
        region = (first.region[0], first.region[1], first.region[2], last.region[3])
        shape = (first.shape[0], last.key.c1 - first.key.c0)
    else:
        region = (first.region[0], first.region[1], last.region[2], last.region[3])
        shape = (last.key.r1 - first.key.r0, last.key.c1 - first.key.c0)
    return Batch(tuple(jobs), region, shape)


def _runs(row: list[Job], max_samples: int, align: int) -> list[list[Job]]:
    """Runs of consecutive tiles of one tile row, each of at most ``max_samples`` (one tile at
    least); a tile whose width is not a multiple of ``align`` ends its run."""
    runs: list[list[Job]] = []
    for job in sorted(row, key=lambda j: j.key.c0):
        run = runs[-1] if runs else None
        if (run and run[-1].key.c1 == job.key.c0 and run[-1].shape[1] % align == 0
                and sum(j.samples for j in run) + job.samples <= max_samples):
            run.append(job)
        else:
            runs.append([job])
    return runs


def make_batches(jobs: list[Job], max_samples: int, align: int = 2) -> list[Batch]:
    """The jobs gathered into batches of at most ``max_samples`` samples each (a single tile may
    exceed it), ordered as their first job is in ``jobs`` (centre first stays centre first).

    Within a batch every tile but the last along each axis spans a multiple of ``align``
    samples: with ``align`` twice the engine's output block, a batch's blocks (and those of its
    coarse pass and completion) are each tile's own, so a tile's values do not depend on the
    batch it was rendered in (but for float32 rounding of the grid's coordinates, ~1e-7).
    ``align`` is made even: every tile then starts at an even offset in its batch."""
    align = max(2, align + align % 2)
    rank = {j.key: i for i, j in enumerate(jobs)}
    groups: dict = {}
    singles = []
    for job in jobs:
        k = job.key
        if k.lattice is None:
            singles.append(Batch((job,), job.region, job.shape))
        else:
            groups.setdefault((k.source, k.plane, k.cell, k.lattice, job.frame, k.r0, k.r1), []).append(job)
    rows = [_runs(row, max_samples, align) for _, row in sorted(groups.items(), key=lambda kv: kv[0][-2])]
    bands: list[list[list[Job]]] = []  # runs stacked: the same columns, consecutive rows
    for run in (r for row in rows for r in row):
        for band in bands:
            top, below = band[-1], run
            same = [j.key.c0 for j in top] == [j.key.c0 for j in below] and \
                [j.key.c1 for j in top] == [j.key.c1 for j in below]
            key_of = (lambda j: (j.key.source, j.key.plane, j.key.cell, j.key.lattice, j.frame))
            if (same and key_of(top[0]) == key_of(below[0]) and top[0].key.r1 == below[0].key.r0
                    and top[0].shape[0] % align == 0
                    and sum(j.samples for r in band for j in r) + sum(j.samples for j in run) <= max_samples):
                band.append(run)
                break
        else:
            bands.append([run])
    batches = [_join([j for r in band for j in r], 0) if len(band) > 1 else _join(band[0], 1) for band in bands]
    batches += singles
    return sorted(batches, key=lambda b: min(rank[j.key] for j in b.jobs))


def siblings(batches: list[Batch], key) -> list[tuple[Batch, ...]]:
    """``batches`` grouped where ``key(batch)`` is equal (e.g. region, shape and cell: the same
    samples of different sources, such as the channels of one image), each group ordered and
    placed as its first batch is: one engine call renders a group."""
    groups: dict = {}
    for b in batches:
        groups.setdefault(key(b), []).append(b)
    return [tuple(g) for g in groups.values()]


def spread(coarse: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A tile of ``shape`` from its samples on even rows and columns, each over 2 x 2."""
    return coarse.repeat(2, 0).repeat(2, 1)[: shape[0], : shape[1]]
