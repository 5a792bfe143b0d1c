"""The live session: set once, query many. It knows the camera's plan of every source, what is
cached (finished tiles; the renderer keeps the latents) and what each view still needs.

``session.view(camera, states)`` plans every source (a :class:`~napari_liif.live.planes.SourceState`,
or a message why it cannot be shown) and sends the renderer one request with the tiles that no
cache holds, all sources interleaved centre first; ``session.collect()`` takes the renderer's
results and pastes them into each source's buffer (the overlay's data in the front end).
``refresh_due`` says when the front end should show the buffers again. No Qt, no napari.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .keys import Done, Failed, Frame, Job, Kind, Note, PlaneSpec, Request, Result, TileKey
from .renderer import Renderer
from .viewport import Camera2D, Lattice, Tile, ViewPlan, magnification, plan_view

#: at most one refresh of the shown buffers per this many seconds while tiles stream in, besides
#: the first tile of a view, the moment it is covered and its last tile: each refresh uploads
#: the overlay textures and redraws the canvas, which costs the renderer CPU time
REFRESH_S = 0.25


def default_tile(device) -> int:
    """Screen tile size for a device (name or torch.device): 128 on a CPU, so the first tile
    shows soon; 512 on a GPU, where per-tile overhead, not arithmetic, is what costs."""
    from ..device import resolve_device

    return 128 if resolve_device(device).type == "cpu" else 512


@dataclass
class SourceView:
    """One live source: its plane, its current plan and what the plan still lacks."""

    sid: int
    state: object = field(default=None, repr=False)  # SourceState of the planned plane, None before the first plan
    data_version: int = 0
    plan: ViewPlan | None = field(default=None, repr=False)
    plan_id: tuple | None = field(default=None, repr=False)
    missing: dict[TileKey, Tile] = field(default_factory=dict, repr=False)
    previewed: set[TileKey] = field(default_factory=set, repr=False)  # missing tiles whose preview is pasted
    covered: np.ndarray | None = field(default=None, repr=False)  # tiles holding samples (full or preview), from grid0
    grid0: tuple[int, int] = (0, 0)
    buffer: np.ndarray | None = field(default=None, repr=False)

    @property
    def plane_key(self):
        return None if self.state is None else self.state.key(self.data_version)

    def coverage_origin(self) -> tuple[int, int]:
        """Buffer position of ``covered[0, 0]``'s tile corner (for a coverage mask)."""
        t = self.plan.tile_size
        return self.grid0[0] * t - self.plan.rows[0], self.grid0[1] * t - self.plan.cols[0]


@dataclass(frozen=True)
class Planned:
    """What :meth:`Session.view` did to one source: ``moved`` its plan changed (show it anew),
    ``blank`` its plane changed (stop showing the old one at once), ``message`` why it shows nothing."""

    source: SourceView
    moved: bool
    blank: bool = False
    message: str | None = None


@dataclass
class Collected:
    """What one :meth:`Session.collect` brought: ``pasted`` (tiles or previews of the current
    views), ``error`` / ``note`` (the newest, of the current request)."""

    pasted: bool = False
    error: str | None = None
    note: str | None = None


class Session:
    """Live rendering of several sources sharing one renderer and one tile cache."""

    def __init__(self, loader, n_sources: int, *, tile: int = 128, cell: str = "on", preview: bool = True,
                 encoder_tile: int = 32, cache_bytes: int = 512 << 20, tile_cache_bytes: int = 256 << 20,
                 batch_samples: int | None = None):
        self.tile, self.cell, self.preview = int(tile), cell, bool(preview)
        self.sources = [SourceView(k) for k in range(n_sources)]
        self.renderer = Renderer(loader, encoder_tile=encoder_tile, cache_bytes=cache_bytes,
                                 batch_samples=batch_samples)
        self.renderer.start()
        self.gen = 0
        self._cache: OrderedDict[TileKey, np.ndarray] = OrderedDict()
        self._cache_bytes, self._cache_limit = 0, int(tile_cache_bytes)
        self.listeners: list = []  # called with every Result taken from the renderer
        self.tiles_rendered = 0  # tiles received from the renderer
        self.tiles_shown = 0  # tiles in a shown refresh
        self.last_tile_time: float | None = None  # perf_counter of the last refresh showing new tiles
        self.covered_time: float | None = None  # perf_counter when the view was first all covered
        self._unshown, self._dirty, self._fresh, self._last_refresh = 0, set(), False, 0.0

    # -- planning -----------------------------------------------------------------------
    def view(self, cam: Camera2D, states: dict) -> list[Planned]:
        """Plan every source for ``cam`` (``states[sid]``: its SourceState or a message) and send
        the renderer what the views lack; returns what happened to each source."""
        out = [self._plan(src, cam, states[src.sid]) for src in self.sources if src.sid in states]
        if not any(p.moved for p in out):
            return out  # nothing changed: the current work goes on
        self.gen += 1
        jobs, planes = [], {}
        for src in self.sources:
            if src.plan is None or not src.missing:
                continue
            planes[src.sid] = PlaneSpec(src.plane_key, src.state.prepare)
            plan = src.plan
            whole = Tile((0, 0), plan.rows[0], plan.rows[1], plan.cols[0], plan.cols[1])
            frame = Frame(plan.region(whole), plan.shape, (plan.rows[0], plan.cols[0]))
            jobs += [Job(k, plan.region(t), t.shape, frame) for k, t in src.missing.items()]
        self._unshown, self._dirty, self._fresh = 0, set(), True
        self.covered_time = time.perf_counter() if not jobs else None
        if jobs:
            self.renderer.submit(Request(self.gen, planes, self._centre_first(cam, jobs), self.cell, self.preview))
        else:
            self.renderer.cancel(self.gen)
        return out

    def hide(self, src: SourceView, message: str) -> Planned:
        """Show nothing for ``src`` (``message`` says why) until its next plan."""
        was = src.plan is not None
        src.plan = src.plan_id = src.covered = None
        src.missing.clear()
        return Planned(src, was, blank=True, message=message)

    def _plan(self, src: SourceView, cam: Camera2D, state) -> Planned:
        if isinstance(state, str):
            return self.hide(src, state)
        mag = min(magnification(cam, state.geometry))
        if mag <= 1 + 1e-9:
            return self.hide(src, f"idle: zoom in to see LIIF ({mag:.2f} screen px per pixel now)")
        plan = plan_view(cam, state.geometry, self.tile)
        if plan is None:
            return self.hide(src, "idle: the layer is out of view")
        old_key = src.plane_key
        src.state = state
        key = src.plane_key
        blank = key != old_key
        if blank:
            src.covered = None
        plan_id = (key, self.cell, plan.lattice.key, plan.tiles, plan.rows, plan.cols)
        if plan_id == src.plan_id:
            return Planned(src, False, blank)
        src.plan, src.plan_id = plan, plan_id
        shape = plan.shape + ((4,) if state.rgb else ())
        if src.buffer is None or src.buffer.shape != shape:  # else reused: the overlay keeps its array
            src.buffer = np.empty(shape, np.float32)
        src.buffer.fill(0.0 if state.rgb else np.nan)  # transparent until a tile comes
        ty, tx = [t.index[0] for t in plan.tiles], [t.index[1] for t in plan.tiles]
        src.grid0 = (min(ty), min(tx))
        src.covered = np.zeros((max(ty) - min(ty) + 1, max(tx) - min(tx) + 1), bool)
        src.missing, src.previewed = {}, set()
        for t in plan.tiles:
            tkey = TileKey(src.sid, key, self.cell, plan.lattice.key, t.r0, t.r1, t.c0, t.c1)
            if tkey in self._cache:
                self._cache.move_to_end(tkey)
                self._paste(src, t, self._cache[tkey])
            else:
                src.missing[tkey] = t
        return Planned(src, True, blank)

    @staticmethod
    def _centre_first(cam: Camera2D, jobs: list[Job]) -> list[Job]:
        """All sources' tiles in one queue, centre first; at equal distance, in source order."""
        _, (o_r, o_c) = Lattice.for_camera(cam)
        mid_r, mid_c = o_r + cam.canvas[0] / 2, o_c + cam.canvas[1] / 2

        def dist(job):
            k = job.key
            return ((k.r0 + k.r1) / 2 - mid_r) ** 2 + ((k.c0 + k.c1) / 2 - mid_c) ** 2, k.source

        return sorted(jobs, key=dist)

    def _paste(self, src: SourceView, tile: Tile, values: np.ndarray) -> None:
        rs, cs = src.plan.slot(tile)
        if src.buffer.ndim == 3 and values.shape[-1] != 4:
            values = np.concatenate([values, np.ones(values.shape[:2] + (1,), np.float32)], -1)
        src.buffer[rs, cs] = values
        src.covered[tile.index[0] - src.grid0[0], tile.index[1] - src.grid0[1]] = True

    # -- results --------------------------------------------------------------------------
    def collect(self) -> Collected:
        """Take everything the renderer has finished; paste what the current views need."""
        got, outbox = Collected(), self.renderer.outbox
        while not outbox.empty():
            msg = outbox.get_nowait()
            if isinstance(msg, Result):
                for listener in self.listeners:
                    listener(msg)
                got.pasted |= self._take(msg)
            elif isinstance(msg, Failed) and msg.gen == self.gen:
                got.error = msg.message
            elif isinstance(msg, Note) and msg.gen == self.gen:
                got.note = msg.message
            elif not isinstance(msg, (Done, Failed, Note)):
                raise TypeError(f"unknown message from the renderer: {msg!r}")
        return got

    def _current(self, key: TileKey) -> SourceView | None:
        """The source of ``key`` if the tile was rendered from its current plane."""
        for src in self.sources:
            if src.sid == key.source:
                return src if src.state is not None and key.plane == src.plane_key else None
        return None

    def _take(self, res: Result) -> bool:
        """Cache a tile (or paste a preview); paste it if the current view needs it."""
        if res.kind is Kind.TILE:
            self.tiles_rendered += 1
        src = self._current(res.key)
        if src is None:
            return False
        if res.kind is Kind.TILE:
            self._remember(res.key, res.values)
        tile = src.missing.get(res.key)
        if tile is None or src.plan is None or (res.kind is Kind.PREVIEW and res.gen != self.gen):
            return False  # not part of the current view: kept for later pans
        self._paste(src, tile, res.values)
        self._dirty.add(src.sid)
        if res.kind is Kind.TILE:
            del src.missing[res.key]
            src.previewed.discard(res.key)
            self._unshown += 1
        else:
            src.previewed.add(res.key)
        return True

    def _remember(self, key: TileKey, values: np.ndarray) -> None:
        old = self._cache.pop(key, None)
        self._cache_bytes += values.nbytes - (0 if old is None else old.nbytes)
        self._cache[key] = values
        while len(self._cache) > 1 and self._cache_bytes > self._cache_limit:
            self._cache_bytes -= self._cache.popitem(last=False)[1].nbytes

    def refresh_due(self, now: float | None = None) -> list[SourceView]:
        """The sources to show again now (the throttle of :data:`REFRESH_S`), marked shown."""
        now = time.perf_counter() if now is None else now
        covered = self.covered_time is None and all(s.missing.keys() <= s.previewed for s in self.sources)
        if not self._dirty or not (self._fresh or covered or not self.pending_tiles
                                   or now - self._last_refresh >= REFRESH_S):
            return []
        due = [s for s in self.sources if s.sid in self._dirty and s.plan is not None]
        self._last_refresh = now
        if self._unshown:
            self.tiles_shown += self._unshown
            self.last_tile_time = now
        if covered:
            self.covered_time = now
        self._unshown, self._dirty, self._fresh = 0, set(), False
        return due

    # -- state ----------------------------------------------------------------------------
    @property
    def pending_tiles(self) -> int:
        return sum(len(s.missing) for s in self.sources)

    @property
    def unshown(self) -> bool:
        """Pasted tiles or previews that no refresh has shown yet."""
        return bool(self._dirty)

    @property
    def settled(self) -> bool:
        """Every tile of the current views rendered and shown."""
        return not self.pending_tiles and not self._dirty

    def tiles_done(self) -> tuple[int, int]:
        """``(done, total)`` tiles of the current views of all sources."""
        planned = [s for s in self.sources if s.plan is not None]
        n = sum(len(s.plan.tiles) for s in planned)
        return n - sum(len(s.missing) for s in planned), n

    def changed_data(self, src: SourceView) -> None:
        """The source's data changed: its plane is a new one."""
        src.data_version += 1
        src.covered = None

    def remove(self, src: SourceView) -> None:
        self.sources.remove(src)
        src.buffer, src.plan = None, None
        src.missing.clear()

    def set_loader(self, loader) -> None:
        """Another model from now on: new planes, no cached tile."""
        self.renderer.set_loader(loader)
        for src in self.sources:
            src.data_version += 1
        self.forget()

    def forget(self) -> None:
        self._cache.clear()
        self._cache_bytes = 0

    def close(self, timeout: float = 5.0) -> None:
        self.renderer.stop()
        self.renderer.join(timeout)
        self.forget()
