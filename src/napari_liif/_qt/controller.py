"""The live-zoom controller: keeps LIIF overlays over image layers in sync with the camera.

``attach(viewer, layers)`` puts an image layer named ``"<name> [LIIF]"`` right above each source
layer (every channel of a stack, say). Whenever the camera settles (debounced), the visible part
of every source is rendered at one sample per physical screen pixel, in screen tiles from the
centre outwards, all sources' tiles interleaved in one queue of one background thread
(:mod:`.render_thread`), so the centre of the view sharpens first in every channel; finished tiles
are collected from its outbox by a main-thread timer and pasted into the overlays as they arrive.

Each overlay **stands in** for its source where it holds tiles (:mod:`.stand_in`): the source's
drawing is cut out there and the overlay drawn instead, with the source's colormap, contrast
limits, gamma, opacity and blending (bottom-layer blending included), so the canvas looks like
napari's own, only sharper: additive channel stacks, translucent layers and every blending mode
composite as they did. Where no tile has arrived yet napari draws the source itself. The source
layer's own state (visible, opacity, blending, its place in the list) is never changed; hiding
it hides its overlay, removing it removes its overlay, a style change shows at once, and
``detach`` leaves everything as it was.

The overlays hold values in the sources' *data units*, so changing the contrast only restyles
them. Geometry lives in :mod:`napari_liif.viewport` (Qt-free, unit-tested); what is read from a
layer in :mod:`.layer_state`.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections import OrderedDict

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from ..constants import CELL_MODES
from ..intensity import check_options
from ..loading import start_thread_pool
from ..viewport import Lattice, ViewPlan, magnification, plan_view
from .layer_state import Options, SourceState, check_layer, read_camera, read_source
from .render_thread import FieldSpec, Job, RenderThread, Request
from .stand_in import UNAVAILABLE, StandIn, device_pixel_ratio

_STYLE = ("colormap", "contrast_limits", "gamma", "opacity", "blending", "visible")
POLL_MS = 10  # how often finished tiles are collected from the render thread while it works
#: at most one overlay refresh per this many seconds while tiles stream in, besides the first
#: and the last tile of a view: each refresh uploads the whole overlay texture and redraws the
#: canvas, which on a software-OpenGL machine takes CPU time away from rendering
REFRESH_S = 0.25


def _timed(method):
    """Record in ``self.longest_callback_s`` the longest run of a UI-thread callback."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.longest_callback_s = max(self.longest_callback_s, time.perf_counter() - t)

    return run


class Registry:
    """The live-zoom controllers running, by viewer: ``of(viewer)``; ``changed(viewer)`` is emitted
    when one starts, stops, or gains or loses a layer (widgets follow it, whoever started it)."""

    changed = Signal(object)

    def __init__(self):
        self._live: weakref.WeakSet = weakref.WeakSet()

    def add(self, ctl) -> None:
        self._live.add(ctl)
        self.changed.emit(ctl.viewer)

    def discard(self, ctl) -> None:
        self._live.discard(ctl)
        self.changed.emit(ctl.viewer)

    def of(self, viewer) -> list:
        target = getattr(viewer, "__wrapped__", viewer)
        return [c for c in list(self._live) if c.attached and getattr(c.viewer, "__wrapped__", c.viewer) is target]

    def layers_of(self, viewer) -> list:
        """Every source layer live in ``viewer``."""
        return [ly for c in self.of(viewer) for ly in c.layers]


registry = Registry()


class _Source:
    """One live source layer: its overlay, stand-in, state and current plan."""

    def __init__(self, sid: int, layer):
        self.sid, self.layer = sid, layer
        self.overlay = None
        self.stand: StandIn | None = None
        self.state: SourceState | None = None
        self.plan: ViewPlan | None = None
        self.plan_id = None
        self.data_version = 0
        self.missing: dict[tuple, object] = {}  # tile key -> Tile, for the current plan
        self.previewed: set[tuple] = set()  # keys of missing tiles whose preview is pasted
        self.covered = None  # bool grid of the tiles holding samples (full or preview)
        self.grid0 = (0, 0)  # tile index of covered[0, 0]
        self.buffer: np.ndarray | None = None
        self.connections: list[tuple[object, object]] = []

    def field_key(self):
        return None if self.state is None else (self.sid,) + self.state.field_key(self.data_version)


class LiveZoom:
    """Live LIIF rendering of image ``layers`` in ``viewer``. Build it with :func:`attach`.

    Signals (psygnal): ``status(str)`` (a one-line state: loading, rendering k of n tiles, idle,
    or why nothing is shown), ``progress(done, total)`` (tiles of the current view, all layers),
    ``layers_changed()`` (a layer stopped being live: it or its overlay was removed) and
    ``detached()``.
    """

    status = Signal(str)
    progress = Signal(int, int)
    layers_changed = Signal()
    detached = Signal()

    def __init__(self, viewer, layers, loader, *, cell: str = "on", tile: int = 128, debounce_ms: int = 80,
                 preview: bool = True, encoder_tile: int = 32, cache_bytes: int = 512 << 20,
                 tile_cache_bytes: int = 256 << 20, limits=None, percentiles=None):
        layers = list(layers) if isinstance(layers, (list, tuple)) else [layers]
        if not layers:
            raise ValueError("give at least one image layer to make live")
        for ly in layers:
            reason = check_layer(ly)
            if reason:
                raise TypeError(reason)
        live = [ly.name for ly in registry.layers_of(viewer) if any(ly is x for x in layers)]
        if live:
            raise ValueError(f"layer {live[0]!r} is live already; detach its live zoom first")
        if cell not in CELL_MODES:
            raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
        if int(tile) < 16:
            raise ValueError(f"tile must be at least 16 screen pixels, got {tile}")
        check_options(limits, percentiles)
        self.viewer = viewer
        self.options = Options(None if limits is None else tuple(float(v) for v in limits),
                               None if percentiles is None else tuple(float(v) for v in percentiles))
        self.cell, self.tile, self.preview = cell, int(tile), bool(preview)
        self.attached = True
        self.message = "starting"
        self.error: str | None = None
        self._gen = 0
        self._sources = [_Source(k, ly) for k, ly in enumerate(layers)]
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_limit = int(tile_cache_bytes)
        self.longest_callback_s = 0.0  # longest planning or tile-pasting call on the UI thread
        self.tiles_rendered = 0  # tiles received from the render thread
        self.tiles_shown = 0  # tiles on screen (pasted into an overlay, which was refreshed)
        self.last_tile_time = None  # perf_counter of the last refresh that showed new tiles
        self._unshown = 0  # tiles pasted since the last refresh
        self._dirty: set[int] = set()  # sources whose overlay data changed since the last refresh
        self._fresh_plan = False  # no tile of the current plan shown yet: show the first at once
        self._last_refresh = 0.0
        self.covered_time = None  # perf_counter when the current view was first all covered

        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(debounce_ms))
        self._timer.timeout.connect(self._update)
        self._poll = QTimer()
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._drain)
        start_thread_pool()  # from the main thread, before the render thread loads the model (napari_liif.loading)
        self._thread = RenderThread(loader, encoder_tile=encoder_tile, cache_bytes=cache_bytes)
        self._thread.start()

        # the overlay layers are made by the first _update, right after it has sent the first
        # request: inserting a layer takes ~100 ms that the render thread can use meanwhile
        self._connections: list[tuple[object, object]] = []
        cam = viewer.scene.camera
        dims = viewer.dims
        for emitter in (cam.events.center, cam.events.zoom, viewer.canvas.events.size, dims.events.ndisplay,
                        dims.events.order, dims.events.margin_left, dims.events.margin_right,
                        viewer.canvas.grid.events.enabled):
            self._connect(self._connections, emitter, self.schedule)
        self._connect(self._connections, dims.events.current_step, self._on_step)
        for src in self._sources:
            self._connect_source(src)
        self._connect(self._connections, viewer.layers.events.removed, self._on_removed)
        self._connect(self._connections, viewer.layers.events.moved, self._keep_above)
        registry.add(self)
        self._update()
        self._ensure_overlays()
        self.longest_callback_s = 0.0  # attaching (which inserts the overlay layers) is not a callback

    # -- the layers ----------------------------------------------------------------------
    @property
    def layers(self) -> list:
        """The source layers live now."""
        return [s.layer for s in self._sources]

    @property
    def overlays(self) -> list:
        return [s.overlay for s in self._sources]

    @property
    def layer(self):
        """The first source layer (the only one when a single layer is live)."""
        return self._sources[0].layer if self._sources else None

    @property
    def overlay(self):
        """The first source's ``[LIIF]`` overlay layer."""
        return self._sources[0].overlay if self._sources else None

    # -- setup and teardown ------------------------------------------------------------
    @staticmethod
    def _connect(store: list, emitter, callback) -> None:
        emitter.connect(callback)
        store.append((emitter, callback))

    def _connect_source(self, src: _Source) -> None:
        ly, store = src.layer, src.connections
        for emitter in (ly.events.scale, ly.events.translate, ly.events.rotate, ly.events.shear,
                        ly.events.affine, ly.events.contrast_limits_range):
            self._connect(store, emitter, self.schedule)
        if hasattr(ly.events, "projection_mode"):
            self._connect(store, ly.events.projection_mode, functools.partial(self._on_data, src))
        self._connect(store, ly.events.data, functools.partial(self._on_data, src))
        for name in _STYLE:
            self._connect(store, getattr(ly.events, name), functools.partial(self._sync_style, src))
        self._connect(store, ly.events.name, functools.partial(self._on_name, src))

    @staticmethod
    def _disconnect(store: list) -> None:
        for emitter, callback in store:
            emitter.disconnect(callback)
        store.clear()

    def _ensure_overlays(self) -> None:
        for src in self._sources:
            if src.overlay is None:
                self._make_overlay(src)

    def _make_overlay(self, src: _Source) -> None:
        from napari.layers import Image

        ly = src.layer
        empty = np.zeros((1, 1, 4), np.float32) if ly.rgb else np.full((1, 1), np.nan, np.float32)
        kwargs = {} if ly.rgb else {"colormap": ly.colormap}
        units = getattr(ly, "units", None)
        if units is not None:  # the same world units, or napari stops using units altogether
            kwargs["units"] = tuple(units)[-2:]
        ov = Image(empty, name=f"{ly.name} [LIIF]", rgb=bool(ly.rgb), contrast_limits=ly.contrast_limits,
                   gamma=ly.gamma, opacity=ly.opacity, blending=ly.blending, interpolation2d="nearest",
                   visible=False, metadata={"napari_liif_overlay_of": ly.name}, **kwargs)
        layers = self.viewer.layers
        selected, active = set(layers.selection), layers.selection.active
        layers.insert(layers.index(ly) + 1, ov)
        layers.selection.clear()
        layers.selection.update(selected or {ly})
        layers.selection.active = active if active in layers else ly
        src.overlay = ov
        src.stand = StandIn(self.viewer, ly, ov)
        if not src.stand.ok:
            self._hide(src, UNAVAILABLE)
            self._set_status(UNAVAILABLE)
        elif src.plan is not None:
            self._present(src, new=True)

    def _drop(self, src: _Source) -> None:
        """Stop one source: its connections, stand-in and overlay go."""
        self._disconnect(src.connections)
        if src.stand is not None:
            src.stand.close()
        if src.overlay is not None and src.overlay in self.viewer.layers:
            self.viewer.layers.remove(src.overlay)
        src.buffer = None
        src.missing.clear()

    def detach(self, timeout: float = 5.0) -> None:
        """Disconnect every event, stop the render thread and remove the overlays; every source
        draws as it did before. Idempotent."""
        if not self.attached:
            return
        self.attached = False
        self._timer.stop()
        self._poll.stop()
        self._disconnect(self._connections)
        self._thread.stop()
        self._thread.join(timeout)
        sources, self._sources = self._sources, []
        for src in sources:
            self._drop(src)
        self._cache.clear()
        self._set_status("off")
        registry.discard(self)
        self.detached.emit()

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    # -- options -------------------------------------------------------------------------
    def set_model(self, loader) -> None:
        """Render with another model from now on (``loader()`` runs on the render thread)."""
        self._thread.set_loader(loader)
        for src in self._sources:
            src.data_version += 1  # new fields
        self._cache.clear()
        self.schedule()

    def set_cell(self, cell: str) -> None:
        if cell not in CELL_MODES:
            raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
        self.cell = cell
        self.schedule()

    def set_options(self, limits=None, percentiles=None) -> None:
        """Map intensities by ``limits=(lo, hi)`` or ``percentiles=(p_lo, p_hi)`` from now on
        (both None: the robust range); the planes are encoded again."""
        check_options(limits, percentiles)
        self.options = Options(None if limits is None else tuple(float(v) for v in limits),
                               None if percentiles is None else tuple(float(v) for v in percentiles))
        self.schedule()

    # -- events --------------------------------------------------------------------------
    def schedule(self, event=None) -> None:
        """Re-plan after the debounce interval (restarted by every call)."""
        if self.attached:
            self._timer.start()

    def _blank_changed(self) -> None:
        """Stop standing in at once for every source whose plane changed (the new plane is
        napari's to draw until its tiles arrive: the old one never shows over it)."""
        for src in self._sources:
            state = read_source(self.viewer, src.layer, self.options)
            key = None if isinstance(state, str) else (src.sid,) + state.field_key(src.data_version)
            if key != src.field_key():
                self._blank(src)

    def _blank(self, src: _Source) -> None:
        src.covered = None
        if src.stand is not None:
            src.stand.set_coverage(None)
        if src.overlay is not None and src.overlay.visible:
            src.overlay.visible = False

    def _on_step(self, event=None) -> None:
        if self.attached:
            self._blank_changed()
            self.schedule()

    def _on_data(self, src: _Source, event=None) -> None:
        src.data_version += 1
        self._blank(src)
        self.schedule()

    def _on_name(self, src: _Source, event=None) -> None:
        if src.overlay is not None:
            src.overlay.name = f"{src.layer.name} [LIIF]"

    def _on_removed(self, event) -> None:
        gone = [s for s in self._sources if event.value is s.layer or event.value is s.overlay]
        if not gone:
            return
        if len(gone) == len(self._sources):
            self.detach()
            return
        for src in gone:
            self._sources.remove(src)
            self._drop(src)
        registry.changed.emit(self.viewer)
        self.layers_changed.emit()
        self.schedule()

    def _keep_above(self, event=None) -> None:
        """Keep each overlay directly above its source when layers are reordered (after the
        move that triggered this has finished)."""
        QTimer.singleShot(0, self._restack)

    def _restack(self) -> None:
        layers = self.viewer.layers
        for src in self._sources:
            if self.attached and src.layer in layers and src.overlay in layers:
                i, ov = layers.index(src.layer), layers.index(src.overlay)
                if ov != i + 1:
                    layers.move(ov, i + 1)
                if src.stand is not None:
                    src.stand.sync()

    def _show(self, src: _Source) -> None:
        """The overlay is visible when its source is and there is something to stand in for."""
        ov = src.overlay
        if ov is None:
            return
        want = bool(src.layer.visible and src.plan is not None and src.stand is not None and src.stand.ok)
        if ov.visible != want:
            ov.visible = want
        if src.stand is not None:
            src.stand.sync()

    def _sync_style(self, src: _Source, event=None) -> None:
        """Copy the source's look to its overlay (only what differs: each setter redraws)."""
        ov, ly = src.overlay, src.layer
        if ov is None:
            return
        want = {"contrast_limits": list(ly.contrast_limits), "gamma": ly.gamma, "opacity": ly.opacity,
                "blending": ly.blending}
        if not ly.rgb:
            want["colormap"] = ly.colormap
        for name, value in want.items():
            current = getattr(ov, name)
            if (list(current) != value) if name == "contrast_limits" else (current != value):
                setattr(ov, name, value)
        self._show(src)

    # -- planning (main thread) ----------------------------------------------------------
    def _hide(self, src: _Source, message: str) -> None:
        src.plan = src.plan_id = None
        src.missing.clear()
        self._blank(src)
        self._show(src)
        return message

    @_timed
    def _update(self) -> None:
        if not self.attached:
            return
        cam = read_camera(self.viewer, device_pixel_ratio(self.viewer))
        fields, jobs, messages, moved = {}, [], [], []
        for src in self._sources:
            msg, new_jobs, changed = self._plan_source(src, cam)
            if changed:
                moved.append(src)
            if msg:
                messages.append(msg)
                continue
            if new_jobs:
                fields[src.sid] = FieldSpec(src.field_key(), src.state.prepare)
            jobs += new_jobs
        if not moved:  # an event that did not change any view: the current work goes on
            for src in self._sources:
                self._sync_style(src)
            if messages and not any(s.plan is not None for s in self._sources):
                self._set_status(messages[0])
            return
        self._gen += 1
        jobs = self._interleave(cam, jobs)
        self._unshown, self._dirty, self._fresh_plan = 0, set(), True
        self.covered_time = time.perf_counter() if not self.pending_tiles else None
        if jobs:  # first, so the render thread starts while the overlays are updated
            self._thread.submit(Request(self._gen, fields, jobs, self.cell, self.preview))
            self._poll.start()
        else:
            self._thread.cancel(self._gen)
        for src in moved:
            if src.plan is not None and src.overlay is not None:
                self._present(src, new=True)
        if messages and not any(s.plan is not None for s in self._sources):
            self._set_status(messages[0])
            self.progress.emit(0, 0)
        else:
            self._report()

    def _plan_source(self, src: _Source, cam):
        """Plan one source: ``(message or None, its new jobs, whether its plan changed)``."""
        state = read_source(self.viewer, src.layer, self.options)
        was = src.plan is not None
        if src.stand is not None and not src.stand.ok:
            state = UNAVAILABLE
        if isinstance(state, str):
            return self._hide(src, state), [], was
        mag = magnification(cam, state.geometry)
        if min(mag) <= 1 + 1e-9:
            return self._hide(src, f"idle: zoom in to see LIIF ({min(mag):.2f} screen px per pixel now)"), [], was
        plan = plan_view(cam, state.geometry, self.tile)
        if plan is None:
            return self._hide(src, "idle: the layer is out of view"), [], was
        old_key = src.field_key()
        src.state = state
        field_key = src.field_key()
        if field_key != old_key:
            self._blank(src)
        plan_id = (field_key, self.cell, plan.lattice.key, plan.tiles, plan.rows, plan.cols)
        if plan_id == src.plan_id:
            jobs = [Job(key, plan.region(t), t.shape) for key, t in src.missing.items()]
            return None, jobs, False
        src.plan, src.plan_id = plan, plan_id
        channels = (4,) if state.rgb else ()
        buf = np.zeros(plan.shape + channels, np.float32)
        if not state.rgb:
            buf.fill(np.nan)
        ty = [t.index[0] for t in plan.tiles]
        tx = [t.index[1] for t in plan.tiles]
        src.grid0 = (min(ty), min(tx))
        src.covered = np.zeros((max(ty) - min(ty) + 1, max(tx) - min(tx) + 1), bool)
        src.missing, src.previewed = {}, set()
        jobs = []
        for t in plan.tiles:
            key = (src.sid, field_key, self.cell, plan.lattice.key, t.r0, t.r1, t.c0, t.c1)
            if key in self._cache:
                self._cache.move_to_end(key)
                self._paste(src, buf, t, self._cache[key])
            else:
                src.missing[key] = t
                jobs.append(Job(key, plan.region(t), t.shape))
        src.buffer = buf
        return None, jobs, True

    def _interleave(self, cam, jobs: list[Job]) -> list[Job]:
        """All sources' tiles in one queue, centre first; at equal distance, in source order."""
        _, (o_r, o_c) = Lattice.for_camera(cam)
        mid_r, mid_c = o_r + cam.canvas[0] / 2, o_c + cam.canvas[1] / 2

        def dist(job):
            _, _, _, _, r0, r1, c0, c1 = job.key
            return (((r0 + r1) / 2 - mid_r) ** 2 + ((c0 + c1) / 2 - mid_c) ** 2, job.key[0])

        return sorted(jobs, key=dist)

    def _present(self, src: _Source, new: bool = False) -> None:
        """Show ``src``'s buffer: data, frame and tile mask in one main-thread call (one draw)."""
        ov, plan = src.overlay, src.plan
        if new:
            ov.data = src.buffer
            ov.scale, ov.translate = plan.scale, plan.translate
        else:
            ov.refresh(thumbnail=not src.missing, extent=False, highlight=False)
        if src.stand is not None:
            tile = plan.tile_size
            origin = (src.grid0[0] * tile - plan.rows[0], src.grid0[1] * tile - plan.cols[0])
            src.stand.set_coverage(src.covered, origin, tile)
        self._show(src)

    def _paste(self, src: _Source, buf: np.ndarray, tile, values: np.ndarray) -> None:
        rs, cs = src.plan.slot(tile)
        if buf.ndim == 3:
            buf[rs, cs] = values if values.shape[-1] == 4 else np.concatenate(
                [values, np.ones(values.shape[:2] + (1,), np.float32)], -1)
        else:
            buf[rs, cs] = values
        src.covered[tile.index[0] - src.grid0[0], tile.index[1] - src.grid0[1]] = True

    # -- results (main thread, collected from the render thread's outbox) ----------------
    def _source(self, key):
        for src in self._sources:
            if src.sid == key[0]:
                return src
        return None

    @_timed
    def _drain(self) -> None:
        """Take everything the render thread has finished; refresh the overlays once."""
        pasted = False
        outbox = self._thread.outbox
        while self.attached and not outbox.empty():
            kind, gen, *rest = outbox.get_nowait()
            if kind == "tile":
                pasted |= self._on_tile(*rest)
            elif kind == "preview" and gen == self._gen:
                pasted |= self._on_preview(*rest)
            elif gen == self._gen and kind == "failed":
                self.error = rest[0]
                self._set_status(f"error: {rest[0]}")
            elif gen == self._gen and kind == "note":
                self._set_status(rest[0])
        now = time.perf_counter()
        pending = self.pending_tiles
        covered = self.covered_time is None and all(s.missing.keys() <= s.previewed for s in self._sources)
        if self._dirty and (self._fresh_plan or covered or not pending or now - self._last_refresh >= REFRESH_S):
            for src in self._sources:
                if src.sid in self._dirty and src.plan is not None:
                    self._present(src)
            self._last_refresh = time.perf_counter()
            if self._unshown:
                self.tiles_shown += self._unshown
                self.last_tile_time = self._last_refresh
            if covered:
                self.covered_time = self._last_refresh
            self._unshown, self._dirty, self._fresh_plan = 0, set(), False
        if pasted:
            self._report()
        if not self._thread.busy() and outbox.empty() and not self._dirty:
            self._poll.stop()

    def _current(self, key) -> _Source | None:
        """The source a tile belongs to, if it was rendered from its current field."""
        src = self._source(key)
        return src if src is not None and src.state is not None and key[1] == src.field_key() else None

    def _on_tile(self, key, values) -> bool:
        """Cache a finished tile; paste it if the current view needs it. True if pasted."""
        self.tiles_rendered += 1
        src = self._current(key)
        if src is None:
            return False
        self._cache[key] = values
        self._cache.move_to_end(key)
        while len(self._cache) > 1 and sum(v.nbytes for v in self._cache.values()) > self._cache_limit:
            self._cache.popitem(last=False)
        tile = src.missing.pop(key, None)
        if tile is None or src.plan is None:
            return False  # not part of the current view: kept for later pans
        self._paste(src, src.buffer, tile, values)
        self._unshown += 1
        self._dirty.add(src.sid)
        src.previewed.discard(key)
        return True

    def _on_preview(self, key, values) -> bool:
        """Paste a preview where the current view still lacks that tile."""
        src = self._current(key)
        tile = src.missing.get(key) if src is not None else None
        if tile is None or src.plan is None:
            return False
        self._paste(src, src.buffer, tile, values)
        src.previewed.add(key)
        self._dirty.add(src.sid)
        return True

    def tiles_done(self) -> tuple[int, int]:
        """``(done, total)`` tiles of the current views of all layers (what ``progress`` reports)."""
        planned = [s for s in self._sources if s.plan is not None]
        n = sum(len(s.plan.tiles) for s in planned)
        return n - sum(len(s.missing) for s in planned), n

    def _report(self) -> None:
        if not any(s.plan is not None for s in self._sources):
            return
        done, n = self.tiles_done()
        self.progress.emit(done, n)
        self._set_status("idle" if done == n else f"rendering {done} of {n} tiles")

    def _set_status(self, message: str) -> None:
        if message != self.message:
            self.message = message
            if message != "idle" and not message.startswith("error"):
                self.error = None
        self.status.emit(message)

    # -- scripting -----------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """True when the current view is fully rendered (or nothing is to be shown)."""
        return self.attached and not self._timer.isActive() and not self.pending_tiles

    @property
    def encoded_tiles(self) -> int:
        """Encoder tiles computed so far for the current fields (0 before the first render)."""
        return sum(f.tiles_encoded for f in self._thread.fields)

    @property
    def encoded_pixels(self) -> int:
        """Input pixels run through the encoder so far for the current fields, halos included."""
        return sum(f.pixels_encoded for f in self._thread.fields)

    @property
    def plane_encoded(self) -> bool:
        """True once the displayed planes are encoded in the background (after the view settled;
        within the latent caches), so pans and zooms over them no longer wait for the encoder."""
        return self._thread.plane_encoded

    @property
    def pending_tiles(self) -> int:
        return sum(len(s.missing) for s in self._sources)

    @property
    def plan(self) -> ViewPlan | None:
        """The first source's current plan (lattice, tiles, overlay frame); None when hidden."""
        return self._sources[0].plan if self._sources else None

    def plan_of(self, layer) -> ViewPlan | None:
        for src in self._sources:
            if src.layer is layer:
                return src.plan
        return None

    def wait_idle(self, timeout: float = 60.0) -> "LiveZoom":
        """Process Qt events until the current view is fully rendered.

        Raises ``TimeoutError`` after ``timeout`` seconds and ``RuntimeError`` if rendering failed.
        """
        app = QApplication.instance()
        deadline = time.monotonic() + timeout
        while True:
            app.processEvents()
            if not self.attached:
                raise RuntimeError("the live-zoom controller is detached")
            if self.error and not self._timer.isActive():
                raise RuntimeError(f"live zoom failed: {self.error}")
            if self.idle and not self._dirty:
                app.processEvents()
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"live zoom not idle after {timeout:g} s: {self.message}")
            time.sleep(0.002)


def default_tile(device) -> int:
    """Screen tile size for a device (name or torch.device): 128 on a CPU, so the first tile
    shows soon; 512 on a GPU, where per-tile overhead, not arithmetic, is what costs."""
    from ..device import resolve_device

    return 128 if resolve_device(device).type == "cpu" else 512


def model_loader(model, device: str, precision: str):
    """Load ``model`` (a path or None for the bundled default) on ``device`` at ``precision``,
    cached (:func:`napari_liif.api.get_model`). Bound with ``functools.partial`` it is a loader
    for :class:`LiveZoom`, called on the render thread."""
    from ..api import get_model

    return get_model(model, device, precision)


def channel_group(viewer, layer) -> list:
    """The image layers shown as channels together with ``layer`` (what ``channel_axis`` makes): the
    run of neighbouring layers in the list with its shape and placement whose upper members are
    additive, in list order; just ``layer`` when there is none."""
    from napari.layers import Image

    from .layer_state import is_overlay

    def same(ly):
        return (isinstance(ly, Image) and not is_overlay(ly) and ly.data.shape == layer.data.shape
                and ly.rgb == layer.rgb and list(ly.scale) == list(layer.scale)
                and list(ly.translate) == list(layer.translate))

    lst = [ly for ly in viewer.layers if not is_overlay(ly)]
    if layer not in lst:
        return [layer]
    lo = hi = lst.index(layer)
    while lo > 0 and lst[lo].blending == "additive" and same(lst[lo - 1]):
        lo -= 1
    while hi + 1 < len(lst) and lst[hi + 1].blending == "additive" and same(lst[hi + 1]):
        hi += 1
    return lst[lo:hi + 1]


def attach(viewer, layers, model=None, *, device: str = "auto", precision: str = "auto", cell: str = "on",
           tile: int | None = None, debounce_ms: int = 80, preview: bool = True, encoder_tile: int = 32,
           cache_bytes: int = 512 << 20, limits=None, percentiles=None) -> LiveZoom:
    """Turn on live LIIF zoom for image ``layers`` of ``viewer``.

    Parameters
    ----------
    viewer : napari.Viewer
    layers : napari.layers.Image, str, or a list of them
        The image layer(s) (or names), e.g. every channel of a stack opened with
        ``channel_axis``: each gets its overlay, and all share one render queue, centre first.
        Labels and other layer types raise ``TypeError``; a layer that is live already, ``ValueError``.
    model : LiifModel, path or None
        A loaded model, a checkpoint file (official ``.pth`` or napari-liif ``.safetensors``),
        or None for the bundled default. Files are loaded on the render thread.
    device, precision : str
        Used when ``model`` is a path or None: ``auto|cpu|cuda|mps`` and ``auto|fp32|bf16|fp16``
        (``auto``: bf16 on CUDA and on CPUs with fast bf16 matrix products, fp32 elsewhere; the
        input and the bilinear residual stay fp32, and the robust intensity map keeps 16-bit data
        with hot pixels from banding).
    cell : {"on", "off", "clamp"}
        Cell decoding mode (see :meth:`napari_liif.field.EncodedField.cell`).
    tile : int or None
        Screen tile size in physical screen pixels; smaller tiles show the first pixels sooner,
        larger ones have less overhead. None: 128 on a CPU, 512 on a GPU (where a 1920x1080 view
        is a few tiles instead of 135; chosen, not yet measured on a GPU).
    debounce_ms : int
        How long the camera must be still before rendering starts.
    preview : bool
        After the centre tiles, show every other tile's samples on even rows and columns first
        (a quarter of them, as 2x2 blocks), then complete each tile with the rest: the view is
        covered sooner at no extra decoding. Skipped when the full pass is quick anyway.
    encoder_tile, cache_bytes : int
        Encoder tile size (input pixels) and the memory bound of the encoded-latent caches (all
        layers together).
    limits, percentiles : (float, float), optional
        The intensity mapping (:mod:`napari_liif.intensity`): data values, or percentiles of each
        plane, mapped to the model's 0 and 1 instead of the robust range.

    Returns
    -------
    LiveZoom
        The controller: ``wait_idle(timeout)`` processes Qt events until the view is rendered,
        ``detach()`` removes the overlays and stops everything; ``status``, ``progress``,
        ``layers_changed`` and ``detached`` are psygnal signals; :data:`registry` lists the
        controllers of a viewer.

    Examples
    --------
    >>> import napari, napari_liif, skimage
    >>> viewer = napari.Viewer()
    >>> layer = viewer.add_image(skimage.data.camera())
    >>> live = napari_liif.attach(viewer, layer)
    >>> viewer.scene.camera.zoom = 4
    >>> live.wait_idle(60)
    """
    items = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    items = [viewer.layers[ly] if isinstance(ly, str) else ly for ly in items]
    from ..engine import LiifModel

    if isinstance(model, LiifModel):
        loader = functools.partial(lambda m: m, model)
    else:
        loader = functools.partial(model_loader, model, device, precision)
    if tile is None:
        tile = default_tile(model.device if isinstance(model, LiifModel) else device)
    return LiveZoom(viewer, items, loader, cell=cell, tile=tile, debounce_ms=debounce_ms, preview=preview,
                    encoder_tile=encoder_tile, cache_bytes=cache_bytes, limits=limits, percentiles=percentiles)
