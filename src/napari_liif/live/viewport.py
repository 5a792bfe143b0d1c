"""Viewport geometry for live zoom: which samples to render, and where they go. No Qt, no napari.

Conventions
-----------
* *World* coordinates are napari's: ``(row, col)`` of the two displayed axes. The camera has a
  ``center`` and a ``zoom`` (screen pixels per world unit); the canvas is ``(h, w)`` screen pixels.
  Screen pixel ``i`` is centred at world ``tl + (i + 0.5) / zoom`` with ``tl = center - size / (2 zoom)``.
* *Screen pixels are physical pixels.* napari's zoom and canvas size count logical pixels; on a
  HiDPI screen each is ``dpr x dpr`` physical ones (the device pixel ratio).
  :meth:`Camera2D.physical` turns napari's camera into the physical one, so the lattice below has
  one sample per physical pixel.
* A layer maps *data* coordinates to world by ``world = data * scale + translate``; data pixel ``i``
  is centred at data coordinate ``i``.
* The engine renders *regions* in pixel-edge units, ``edge = data + 0.5``: the whole image is
  ``(0, 0, H, W)`` (see :mod:`napari_liif.field`).

The lattice
-----------
Live zoom samples the image on a *lattice* of one sample per screen pixel. Sample ``k`` along an
axis is centred at world ``(k + phase + 0.5) / zoom``, where ``phase`` in ``[0, 1)`` is the
sub-pixel offset of the screen grid, quantised to ``1 / PHASE_STEPS`` of a screen pixel. Panning
by whole screen pixels (what a mouse drag does) keeps the lattice, so tiles of the lattice
rendered before can be shown again; a zoom or a sub-pixel pan starts a new lattice.

Tiles are ``tile x tile`` blocks of lattice samples anchored at multiples of ``tile``, clipped to
the samples that are on screen and whose centres lie inside the image, and are ordered from the
centre of the screen outwards. (Clipping to the screen renders about a quarter fewer samples for a
1024x768 canvas with 128-pixel tiles; after a pan, a tile that was cut by the screen edge is
rendered again whole.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PHASE_STEPS = 256


@dataclass(frozen=True)
class Camera2D:
    """The 2D camera: ``center`` (row, col) in world units, ``zoom`` in screen px per world unit,
    ``canvas`` (h, w) in screen pixels."""

    center: tuple[float, float]
    zoom: float
    canvas: tuple[int, int]

    def __post_init__(self):
        if not (math.isfinite(self.zoom) and self.zoom > 0):
            raise ValueError(f"zoom must be a positive finite number, got {self.zoom!r}")
        if min(self.canvas) < 1:
            raise ValueError(f"canvas must be at least 1x1 screen pixels, got {self.canvas}")

    @property
    def top_left(self) -> tuple[float, float]:
        """World coordinate of the canvas's top-left corner."""
        return tuple(c - n / (2 * self.zoom) for c, n in zip(self.center, self.canvas, strict=True))

    def physical(self, dpr: float) -> "Camera2D":
        """The same view counted in physical pixels: ``zoom * dpr`` and the canvas ``round(n * dpr)``
        (what Qt allocates), centred where this one is."""
        if not (math.isfinite(dpr) and dpr > 0):
            raise ValueError(f"device pixel ratio must be a positive finite number, got {dpr!r}")
        if dpr == 1:
            return self
        return Camera2D(self.center, self.zoom * dpr, tuple(max(1, round(n * dpr)) for n in self.canvas))

    def visible_rect(self) -> tuple[float, float, float, float]:
        """World rectangle ``(top, left, bottom, right)`` that the canvas shows."""
        (top, left), (h, w) = self.top_left, self.canvas
        return top, left, top + h / self.zoom, left + w / self.zoom


@dataclass(frozen=True)
class LayerGeometry:
    """The displayed part of a layer: data ``shape`` (rows, cols) and its world ``scale`` and ``translate``."""

    shape: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)
    translate: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        if min(self.shape) < 1:
            raise ValueError(f"layer shape must be at least 1x1, got {self.shape}")
        if not all(math.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError(f"live zoom needs a positive layer scale, got {self.scale}")

    def world_to_data(self, world: tuple[float, float]) -> tuple[float, float]:
        return tuple((w - t) / s for w, t, s in zip(world, self.translate, self.scale, strict=True))

    def data_to_world(self, data: tuple[float, float]) -> tuple[float, float]:
        return tuple(d * s + t for d, t, s in zip(data, self.translate, self.scale, strict=True))


def magnification(cam: Camera2D, geom: LayerGeometry) -> tuple[float, float]:
    """Screen pixels per data pixel along rows and columns."""
    return cam.zoom * geom.scale[0], cam.zoom * geom.scale[1]


@dataclass(frozen=True)
class Lattice:
    """One sample per screen pixel: sample ``k`` centred at world ``(k + phase + 0.5) / zoom``."""

    zoom: float
    phase: tuple[float, float]

    @classmethod
    def for_camera(cls, cam: Camera2D) -> tuple["Lattice", tuple[int, int]]:
        """The camera's lattice and the lattice index of screen pixel (0, 0)."""
        phases, origin = [], []
        for t in cam.top_left:
            s = t * cam.zoom  # screen-pixel units
            q = round((s - math.floor(s)) * PHASE_STEPS)
            k0 = math.floor(s)
            if q == PHASE_STEPS:  # rounds up to the next whole pixel
                q, k0 = 0, k0 + 1
            phases.append(q / PHASE_STEPS)
            origin.append(k0)
        return cls(cam.zoom, (phases[0], phases[1])), (origin[0], origin[1])

    @property
    def key(self) -> tuple:
        """Hashable identity: equal keys mean the same sample positions."""
        return (float(self.zoom).hex(), self.phase)

    def sample_world(self, axis: int, k: float) -> float:
        """World coordinate of the centre of sample ``k`` along ``axis`` (0 rows, 1 cols)."""
        return (k + self.phase[axis] + 0.5) / self.zoom

    def sample_edge(self, axis: int, k: float, geom: LayerGeometry) -> float:
        """Data pixel-edge coordinate of the *leading edge* of sample ``k`` (``k + 0.5`` gives its centre)."""
        w = (k + self.phase[axis]) / self.zoom
        return (w - geom.translate[axis]) / geom.scale[axis] + 0.5

    def inside(self, axis: int, geom: LayerGeometry) -> tuple[int, int]:
        """Range ``[k0, k1)`` of samples whose centres lie inside the image along ``axis``."""
        s, t, n, p = geom.scale[axis], geom.translate[axis], geom.shape[axis], self.phase[axis]
        # centre edge coordinate e(k) = ((k + p + .5) / zoom - t) / s + .5 must satisfy 0 <= e < n
        lo = self.zoom * (t - 0.5 * s) - p - 0.5
        hi = self.zoom * (t + (n - 0.5) * s) - p - 0.5
        return math.ceil(lo - 1e-9), math.ceil(hi - 1e-9)


@dataclass(frozen=True)
class Tile:
    """A block of lattice samples: rows ``[r0, r1)``, cols ``[c0, c1)``; ``index`` is its grid cell."""

    index: tuple[int, int]
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0


@dataclass(frozen=True)
class ViewPlan:
    """What to render for one camera: the lattice, the tiles (centre first) and the overlay frame.

    The overlay buffer covers lattice rows ``[rows[0], rows[1])`` and columns ``[cols[0], cols[1])``;
    drawn as an image with world ``scale`` and ``translate`` it lines up with the screen pixels.
    """

    lattice: Lattice
    geometry: LayerGeometry
    tile_size: int
    tiles: tuple[Tile, ...]
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]

    @property
    def scale(self) -> tuple[float, float]:
        return 1 / self.lattice.zoom, 1 / self.lattice.zoom

    @property
    def translate(self) -> tuple[float, float]:
        """World position of the centre of the buffer's first sample (napari's pixel centre)."""
        return self.lattice.sample_world(0, self.rows[0]), self.lattice.sample_world(1, self.cols[0])

    def region(self, tile: Tile) -> tuple[float, float, float, float]:
        """Engine region ``(top, left, bottom, right)`` in data pixel-edge units for ``tile``."""
        lat, g = self.lattice, self.geometry
        return (lat.sample_edge(0, tile.r0, g), lat.sample_edge(1, tile.c0, g),
                lat.sample_edge(0, tile.r1, g), lat.sample_edge(1, tile.c1, g))

    def slot(self, tile: Tile) -> tuple[slice, slice]:
        """Where ``tile`` goes in the overlay buffer."""
        return (slice(tile.r0 - self.rows[0], tile.r1 - self.rows[0]),
                slice(tile.c0 - self.cols[0], tile.c1 - self.cols[0]))


def plan_view(cam: Camera2D, geom: LayerGeometry, tile: int = 128) -> ViewPlan | None:
    """The tiles covering what ``cam`` shows of the layer, centre-out; None if none of it is visible."""
    if tile < 1:
        raise ValueError(f"tile must be a positive number of screen pixels, got {tile}")
    lat, (o_r, o_c) = Lattice.for_camera(cam)
    in_r, in_c = lat.inside(0, geom), lat.inside(1, geom)
    vis_r = max(in_r[0], o_r), min(in_r[1], o_r + cam.canvas[0])
    vis_c = max(in_c[0], o_c), min(in_c[1], o_c + cam.canvas[1])
    if vis_r[0] >= vis_r[1] or vis_c[0] >= vis_c[1]:
        return None
    tiles = []
    for ty in range(vis_r[0] // tile, (vis_r[1] - 1) // tile + 1):
        for tx in range(vis_c[0] // tile, (vis_c[1] - 1) // tile + 1):
            r0, r1 = max(ty * tile, vis_r[0]), min(ty * tile + tile, vis_r[1])
            c0, c1 = max(tx * tile, vis_c[0]), min(tx * tile + tile, vis_c[1])
            tiles.append(Tile((ty, tx), r0, r1, c0, c1))
    mid_r, mid_c = o_r + cam.canvas[0] / 2, o_c + cam.canvas[1] / 2
    tiles.sort(key=lambda t: ((t.r0 + t.r1) / 2 - mid_r) ** 2 + ((t.c0 + t.c1) / 2 - mid_c) ** 2)
    rows = min(t.r0 for t in tiles), max(t.r1 for t in tiles)
    cols = min(t.c0 for t in tiles), max(t.c1 for t in tiles)
    return ViewPlan(lat, geom, tile, tuple(tiles), rows, cols)


def screen_to_data(cam: Camera2D, geom: LayerGeometry, i: float, j: float) -> tuple[float, float]:
    """Data coordinate (napari convention, pixel centres at integers) of the centre of screen pixel ``(i, j)``."""
    top, left = cam.top_left
    return geom.world_to_data((top + (i + 0.5) / cam.zoom, left + (j + 0.5) / cam.zoom))
