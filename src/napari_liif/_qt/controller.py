"""The live-zoom controller: the Qt glue between napari and the live core (:mod:`napari_liif.live`).

It forwards napari's events (camera, canvas, dims, layer changes) to a
:class:`~napari_liif.live.session.Session` after a debounce, translating each layer into a plain
description (:mod:`.layer_state`), and shows what the session collects: an image layer named
``"<name> [LIIF]"`` right above each source, which **stands in** for its source where it holds
tiles (:mod:`.stand_in`), so additive channel stacks, translucent layers and every blending mode
composite as napari's own. The source layer's state is never changed; hiding it hides its
overlay, removing it removes its overlay, a style change shows at once, and ``detach`` leaves
everything as it was. Overlays hold values in the sources' data units.
"""

from __future__ import annotations

import functools
import time

from psygnal import Signal
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from ..constants import CELL_MODES
from ..live.planes import Options
from ..live.session import Session
from ..live.viewport import ViewPlan
from ..loading import start_thread_pool
from .layer_state import check_layer, read_camera, read_source
from .registry import registry
from .sources import LiveSource, connect, disconnect
from .stand_in import UNAVAILABLE, device_pixel_ratio

POLL_MS = 10  # how often finished tiles are collected from the renderer while it works


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


class LiveZoom:
    """Live LIIF rendering of image ``layers`` in ``viewer``. Build it with :func:`~napari_liif.attach`.

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
                 tile_cache_bytes: int = 256 << 20, limits=None, percentiles=None, model_choice=None):
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
        self.options = Options.of(limits, percentiles)
        self.viewer = viewer
        self.attached = True
        self.message = "starting"
        self.error: str | None = None
        self.model_choice = model_choice  # which model renders and why (a model_choice.Choice), for display
        self.longest_callback_s = 0.0  # longest planning or tile-pasting call on the UI thread
        start_thread_pool()  # from the main thread, before the render thread loads the model (napari_liif.loading)
        self.session = Session(loader, len(layers), tile=tile, cell=cell, preview=preview, encoder_tile=encoder_tile,
                               cache_bytes=cache_bytes, tile_cache_bytes=tile_cache_bytes)
        self._sources = [LiveSource(view, ly) for view, ly in zip(self.session.sources, layers)]
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(debounce_ms))
        self._timer.timeout.connect(self._update)
        self._poll = QTimer()
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._drain)
        self._connections: list = []
        cam, dims = viewer.scene.camera, viewer.dims
        for emitter in (cam.events.center, cam.events.zoom, viewer.canvas.events.size, dims.events.ndisplay,
                        dims.events.order, dims.events.margin_left, dims.events.margin_right,
                        viewer.canvas.grid.events.enabled):
            connect(self._connections, emitter, self.schedule)
        connect(self._connections, dims.events.current_step, self._on_step)
        for src in self._sources:
            src.connect(self.schedule, functools.partial(self._on_data, src), src.sync_style)
        connect(self._connections, viewer.layers.events.removed, self._on_removed)
        connect(self._connections, viewer.layers.events.moved, self._keep_above)
        registry.add(self)
        # the overlays are made right after the first request is sent: inserting a layer takes
        # ~100 ms that the renderer can use meanwhile
        self._update()
        for src in self._sources:
            self._add_overlay(src)
        self.longest_callback_s = 0.0  # attaching (which inserts the overlay layers) is not a callback

    def _add_overlay(self, src: LiveSource) -> None:
        if not src.make_overlay(self.viewer):  # no stand-in possible: nothing shown for it
            self.session.hide(src.view, UNAVAILABLE)
            src.blank()
            src.show()
            self._set_status(UNAVAILABLE)
        elif src.view.plan is not None:
            src.present(new=True)

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

    def detach(self, timeout: float = 5.0) -> None:
        """Disconnect every event, stop the renderer and remove the overlays; every source draws
        as it did before. Idempotent."""
        if not self.attached:
            return
        self.attached = False
        self._timer.stop()
        self._poll.stop()
        disconnect(self._connections)
        self.session.close(timeout)
        sources, self._sources = self._sources, []
        for src in sources:
            src.drop(self.viewer)
        self._set_status("off")
        registry.discard(self)
        self.detached.emit()

    @property
    def thread_alive(self) -> bool:
        return self.session.renderer.is_alive()

    # -- options -------------------------------------------------------------------------
    @property
    def cell(self) -> str:
        return self.session.cell

    def set_model(self, loader, choice=None) -> None:
        """Render with another model from now on (``loader()`` runs on the render thread); ``choice``
        says which and why (:class:`napari_liif.model_choice.Choice`)."""
        self.model_choice = choice
        self.session.set_loader(loader)
        self.schedule()

    def set_cell(self, cell: str) -> None:
        if cell not in CELL_MODES:
            raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
        self.session.cell = cell
        self.schedule()

    def set_options(self, limits=None, percentiles=None) -> None:
        """Map intensities by ``limits=(lo, hi)`` or ``percentiles=(p_lo, p_hi)`` from now on
        (both None: the robust range); the planes are encoded again."""
        self.options = Options.of(limits, percentiles)
        self.schedule()

    # -- events --------------------------------------------------------------------------
    def schedule(self, event=None) -> None:
        """Re-plan after the debounce interval (restarted by every call)."""
        if self.attached:
            self._timer.start()

    def _state(self, src: LiveSource):
        """The source's plain description now (or why it cannot be shown)."""
        if src.stand is not None and not src.stand.ok:
            return UNAVAILABLE
        return read_source(self.viewer, src.layer, self.options)

    def _on_step(self, event=None) -> None:
        """A z step: stop standing in at once where the plane changed (the old one never shows
        over the new one until its tiles arrive)."""
        if not self.attached:
            return
        for src in self._sources:
            state = self._state(src)
            if isinstance(state, str) or state.key(src.view.data_version) != src.view.plane_key:
                src.blank()
        self.schedule()

    def _on_data(self, src: LiveSource, event=None) -> None:
        self.session.changed_data(src.view)
        src.blank()
        self.schedule()

    def _on_removed(self, event) -> None:
        gone = [s for s in self._sources if event.value is s.layer or event.value is s.overlay]
        if not gone:
            return
        if len(gone) == len(self._sources):
            self.detach()
            return
        for src in gone:
            self._sources.remove(src)
            self.session.remove(src.view)
            src.drop(self.viewer)
        registry.changed.emit(self.viewer)
        self.layers_changed.emit()
        self.schedule()

    def _keep_above(self, event=None) -> None:
        """Keep each overlay directly above its source (after the move that triggered this)."""
        QTimer.singleShot(0, self._restack)

    def _restack(self) -> None:
        for src in self._sources if self.attached else []:
            src.restack(self.viewer)

    # -- planning ------------------------------------------------------------------------
    @_timed
    def _update(self) -> None:
        if not self.attached:
            return
        cam = read_camera(self.viewer, device_pixel_ratio(self.viewer))
        planned = self.session.view(cam, {s.view.sid: self._state(s) for s in self._sources})
        messages = [p.message for p in planned if p.message]
        by_view = {id(s.view): s for s in self._sources}
        if not any(p.moved for p in planned):  # nothing changed: the current work goes on
            for src in self._sources:
                src.sync_style()
            if messages and not any(s.view.plan is not None for s in self._sources):
                self._set_status(messages[0])
            return
        if self.session.pending_tiles:
            self._poll.start()
        for p in planned:
            src = by_view[id(p.source)]
            if p.blank:
                src.blank()
            if p.message:
                src.show()
            elif p.moved and src.overlay is not None:
                src.present(new=True)
        if messages and not any(s.view.plan is not None for s in self._sources):
            self._set_status(messages[0])
            self.progress.emit(0, 0)
        else:
            self._report()

    # -- results -------------------------------------------------------------------------
    @_timed
    def _drain(self) -> None:
        """Take everything the renderer has finished; refresh the overlays that changed, at most
        every ``REFRESH_S`` while tiles stream in."""
        if not self.attached:
            return
        got = self.session.collect()
        due = {id(v) for v in self.session.refresh_due()}
        for src in self._sources:
            if id(src.view) in due:
                src.present()
        if got.pasted:
            self._report()
        if got.error:  # after the report: the error stays the status
            self.error = got.error
            self._set_status(f"error: {got.error}")
        elif got.note:
            self._set_status(got.note)
        renderer = self.session.renderer
        if not renderer.busy() and renderer.outbox.empty() and not self.session.unshown:
            self._poll.stop()

    def tiles_done(self) -> tuple[int, int]:
        """``(done, total)`` tiles of the current views of all layers (what ``progress`` reports)."""
        return self.session.tiles_done()

    def _report(self) -> None:
        if not any(s.view.plan is not None for s in self._sources):
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
    tiles_rendered = property(lambda self: self.session.tiles_rendered, doc="tiles received from the renderer")
    tiles_shown = property(lambda self: self.session.tiles_shown, doc="tiles on screen so far")
    last_tile_time = property(lambda self: self.session.last_tile_time,
                              doc="perf_counter of the last refresh that showed new tiles")
    covered_time = property(lambda self: self.session.covered_time,
                            doc="perf_counter when the current view was first all covered (previews included)")
    pending_tiles = property(lambda self: self.session.pending_tiles)

    @property
    def idle(self) -> bool:
        """True when the current view is fully rendered (or nothing is to be shown)."""
        return self.attached and not self._timer.isActive() and not self.pending_tiles

    @property
    def encoded_tiles(self) -> int:
        """Encoder tiles computed so far for the current planes (0 before the first render)."""
        return sum(f.tiles_encoded for f in self.session.renderer.fields)

    @property
    def encoded_pixels(self) -> int:
        """Input pixels run through the encoder so far for the current planes, halos included."""
        return sum(f.pixels_encoded for f in self.session.renderer.fields)

    @property
    def plane_encoded(self) -> bool:
        """True once the displayed planes are encoded in the background (after the view settled;
        within the latent caches), so pans and zooms over them no longer wait for the encoder."""
        return self.session.renderer.plane_encoded

    @property
    def plan(self) -> ViewPlan | None:
        """The first source's current plan (lattice, tiles, overlay frame); None when hidden."""
        return self._sources[0].view.plan if self._sources else None

    def plan_of(self, layer) -> ViewPlan | None:
        return next((s.view.plan for s in self._sources if s.layer is layer), None)

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
            if self.idle and self.session.settled:
                app.processEvents()
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"live zoom not idle after {timeout:g} s: {self.message}")
            time.sleep(0.002)

