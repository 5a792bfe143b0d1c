"""Typed keys and messages of the live core: what a tile is, what is asked of the renderer and
what it answers. Values, not anonymous tuples: a field is read by its name."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class TileKey:
    """One tile's identity in the tile cache: the source, its plane (``PlaneKey``), the cell
    mode, the lattice (``Lattice.key``; None for a tile off any lattice, which is never merged
    with another) and the tile's lattice rows ``[r0, r1)`` and columns ``[c0, c1)``."""

    source: int
    plane: Any
    cell: str
    lattice: Any
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def span(self) -> tuple[int, int, int, int]:
        return self.r0, self.r1, self.c0, self.c1


@dataclass(frozen=True)
class Frame:
    """The whole view's sample grid: ``region`` (data pixel-edge units) on ``shape`` samples,
    its first sample at lattice row and column ``origin``. Every render of a view takes its cell
    from it, so all share one cell (and what is computed per latent and cell)."""

    region: tuple[float, float, float, float]
    shape: tuple[int, int]
    origin: tuple[int, int]


@dataclass(frozen=True)
class Job:
    """A tile to render: its key, its engine region (data pixel-edge units) and its samples;
    ``frame``: the view it belongs to (None: the tile is its own frame)."""

    key: TileKey
    region: tuple[float, float, float, float]
    shape: tuple[int, int]
    frame: Frame | None = None

    @property
    def source(self) -> int:
        return self.key.source

    @property
    def samples(self) -> int:
        return self.shape[0] * self.shape[1]


@dataclass(frozen=True)
class PlaneSpec:
    """How to make one source's plane ready for the engine: ``prepare()`` (run on the render
    thread) returns a :class:`~napari_liif.live.prepared.Prepared`; ``key`` names the result."""

    key: Any
    prepare: Callable[[], Any]


@dataclass
class Request:
    """Everything one view asks of the renderer: the planes by source id and the tiles of all
    sources, centre first (interleaved)."""

    gen: int
    planes: dict[int, PlaneSpec]
    jobs: list[Job] = field(default_factory=list)
    cell: str = "on"
    preview: bool = True  # cover the view with a quarter of the samples first


class Kind(enum.Enum):
    """What a :class:`Result` holds: a whole tile, or its preview (the samples on even lattice
    rows and columns, each spread over 2 x 2)."""

    TILE = "tile"
    PREVIEW = "preview"


@dataclass(frozen=True, eq=False)
class Result:
    """A finished tile or preview of request ``gen``."""

    kind: Kind
    gen: int
    key: TileKey
    values: np.ndarray


@dataclass(frozen=True)
class Note:
    """A state worth showing (e.g. the model is loading)."""

    gen: int
    message: str


@dataclass(frozen=True)
class Failed:
    """Request ``gen`` failed: the one-line reason."""

    gen: int
    message: str


@dataclass(frozen=True)
class Done:
    """Request ``gen`` is rendered in full."""

    gen: int


Message = Result | Note | Failed | Done
