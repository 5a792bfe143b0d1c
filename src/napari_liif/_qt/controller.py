"""The live-zoom controller: keeps a LIIF overlay over an image layer in sync with the camera.

``attach(viewer, layer)`` puts an image layer named ``"<name> [LIIF]"`` right above ``layer``.
Whenever the camera settles (debounced), the visible part of the layer is rendered at one
sample per screen pixel, in screen tiles from the centre outwards, on a background thread
(:mod:`.render_thread`); finished tiles are collected from its outbox by a main-thread timer
and pasted into the overlay as they arrive. Where no tile has
arrived yet the overlay is transparent (NaN, or alpha 0 for RGB) and the source shows through.

The overlay holds values in the source's *data units* and copies the source's colormap,
contrast limits, gamma, opacity, blending and visibility, so it looks exactly like the source
would if it had more pixels; changing the contrast only restyles the overlay.

Geometry lives in :mod:`napari_liif.viewport` (Qt-free, unit-tested).
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from ..constants import CELL_MODES
from ..viewport import ViewPlan, magnification, plan_view
from .layer_state import SourceState, check_layer, read_camera, read_source
from .render_thread import FieldSpec, Job, RenderThread, Request

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


class LiveZoom:
    """Live LIIF rendering of ``layer`` in ``viewer``. Build it with :func:`attach`.

    Signals (psygnal): ``status(str)`` (a one-line state: loading, rendering k of n tiles, idle,
    or why nothing is shown), ``progress(done, total)`` (tiles of the current view), ``detached()``.
    """

    status = Signal(str)
    progress = Signal(int, int)
    detached = Signal()

    def __init__(self, viewer, layer, loader, *, cell: str = "on", tile: int = 128, debounce_ms: int = 80,
                 preview: bool = True,
                 encoder_tile: int = 32, cache_bytes: int = 512 << 20, tile_cache_bytes: int = 256 << 20):
        reason = check_layer(layer)
        if reason:
            raise TypeError(reason)
        if cell not in CELL_MODES:
            raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
        if int(tile) < 16:
            raise ValueError(f"tile must be at least 16 screen pixels, got {tile}")
        self.viewer, self.layer = viewer, layer
        self.cell, self.tile, self.preview = cell, int(tile), bool(preview)
        self.attached = True
        self.message = "starting"
        self.error: str | None = None
        self._gen = 0
        self._data_version = 0
        self._plan: ViewPlan | None = None
        self._plan_id = None
        self._state: SourceState | None = None
        self._missing: dict[tuple, object] = {}  # tile key -> Tile, for the current plan
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_limit = int(tile_cache_bytes)
        self._buffer: np.ndarray | None = None
        self.longest_callback_s = 0.0  # longest planning or tile-pasting call on the UI thread
        self.tiles_rendered = 0  # tiles received from the render thread
        self.tiles_shown = 0  # tiles on screen (pasted into the overlay, which was refreshed)
        self.last_tile_time = None  # perf_counter of the last refresh that showed new tiles
        self._unshown = 0  # tiles pasted since the last refresh
        self._dirty = False  # overlay data changed (tiles or previews) since the last refresh
        self._fresh_plan = False  # no tile of the current plan shown yet: show the first at once
        self._last_refresh = 0.0
        self._previewed: set[tuple] = set()  # keys of missing tiles whose preview is pasted
        self.covered_time = None  # perf_counter when the current view was first all covered

        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(debounce_ms))
        self._timer.timeout.connect(self._update)
        self._poll = QTimer()
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._drain)
        self._thread = RenderThread(loader, encoder_tile=encoder_tile, cache_bytes=cache_bytes)
        self._thread.start()

        # the overlay layer is made by the first _update, right after it has sent the first
        # request: inserting a layer takes ~100 ms that the render thread can use meanwhile
        self.overlay = None
        self._connections: list[tuple[object, object]] = []
        cam = viewer.scene.camera
        for emitter in (cam.events.center, cam.events.zoom, viewer.canvas.events.size,
                        viewer.dims.events.current_step, viewer.dims.events.ndisplay, viewer.dims.events.order,
                        viewer.canvas.grid.events.enabled,
                        layer.events.scale, layer.events.translate, layer.events.rotate, layer.events.shear,
                        layer.events.affine, layer.events.contrast_limits_range):
            self._connect(emitter, self.schedule)
        self._connect(layer.events.data, self._on_data)
        for name in _STYLE:
            self._connect(getattr(layer.events, name), self._sync_style)
        self._connect(layer.events.name, self._on_name)
        self._connect(viewer.layers.events.removed, self._on_removed)
        self._connect(viewer.layers.events.moved, self._keep_above)
        self._update()
        self._ensure_overlay()
        self.longest_callback_s = 0.0  # attaching (which inserts the overlay layer) is not a callback

    # -- setup and teardown ------------------------------------------------------------
    def _connect(self, emitter, callback) -> None:
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def _ensure_overlay(self):
        if self.overlay is None:
            self.overlay = self._make_overlay()
        return self.overlay

    def _make_overlay(self):
        from napari.layers import Image

        src = self.layer
        empty = np.zeros((1, 1, 4), np.float32) if src.rgb else np.full((1, 1), np.nan, np.float32)
        kwargs = {} if src.rgb else {"colormap": src.colormap}
        ov = Image(empty, name=f"{src.name} [LIIF]", rgb=bool(src.rgb), contrast_limits=src.contrast_limits,
                   gamma=src.gamma, opacity=src.opacity, blending=src.blending, interpolation2d="nearest",
                   visible=False, metadata={"napari_liif_overlay_of": src.name}, **kwargs)
        layers = self.viewer.layers
        selected = set(layers.selection)
        layers.insert(layers.index(src) + 1, ov)
        layers.selection.clear()
        layers.selection.update(selected or {src})
        layers.selection.active = src
        return ov

    def detach(self, timeout: float = 5.0) -> None:
        """Disconnect every event, stop the render thread and remove the overlay. Idempotent."""
        if not self.attached:
            return
        self.attached = False
        self._timer.stop()
        self._poll.stop()
        for emitter, callback in self._connections:
            emitter.disconnect(callback)
        self._connections.clear()
        self._thread.stop()
        self._thread.join(timeout)
        if self.overlay in self.viewer.layers:
            self.viewer.layers.remove(self.overlay)
        self._cache.clear()
        self._buffer = None
        self._set_status("off")
        self.detached.emit()

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    # -- options -------------------------------------------------------------------------
    def set_model(self, loader) -> None:
        """Render with another model from now on (``loader()`` runs on the render thread)."""
        self._thread.set_loader(loader)
        self._data_version += 1  # new field
        self._cache.clear()
        self.schedule()

    def set_cell(self, cell: str) -> None:
        if cell not in CELL_MODES:
            raise ValueError(f"cell must be one of {', '.join(CELL_MODES)}, got {cell!r}")
        self.cell = cell
        self.schedule()

    # -- events --------------------------------------------------------------------------
    def schedule(self, event=None) -> None:
        """Re-plan after the debounce interval (restarted by every call)."""
        if self.attached:
            self._timer.start()

    def _on_data(self, event=None) -> None:
        self._data_version += 1
        self._cache.clear()
        self.schedule()

    def _on_name(self, event=None) -> None:
        if self.overlay is not None:
            self.overlay.name = f"{self.layer.name} [LIIF]"

    def _on_removed(self, event) -> None:
        if event.value is self.layer or event.value is self.overlay:
            self.detach()

    def _keep_above(self, event=None) -> None:
        """Keep the overlay directly above its source when layers are reordered (after the
        move that triggered this has finished)."""
        QTimer.singleShot(0, self._restack)

    def _restack(self) -> None:
        layers = self.viewer.layers
        if self.attached and self.layer in layers and self.overlay in layers:
            src, ov = layers.index(self.layer), layers.index(self.overlay)
            if ov != src + 1:
                layers.move(ov, src + 1)

    def _sync_style(self, event=None) -> None:
        """Copy the source's look to the overlay (only what differs: each setter redraws)."""
        ov, src = self.overlay, self.layer
        if ov is None:
            return
        want = {"contrast_limits": list(src.contrast_limits), "gamma": src.gamma, "opacity": src.opacity,
                "blending": src.blending, "visible": bool(src.visible and self._plan is not None)}
        if not src.rgb:
            want["colormap"] = src.colormap
        for name, value in want.items():
            current = getattr(ov, name)
            if (list(current) != value) if name == "contrast_limits" else (current != value):
                setattr(ov, name, value)

    # -- planning (main thread) ----------------------------------------------------------
    def _hide(self, message: str) -> None:
        self._plan = self._plan_id = None
        self._missing.clear()
        self._gen += 1
        self._thread.cancel(self._gen)
        self._ensure_overlay().visible = False
        self._set_status(message)
        self.progress.emit(0, 0)

    @_timed
    def _update(self) -> None:
        if not self.attached:
            return
        state = read_source(self.viewer, self.layer)
        if isinstance(state, str):
            self._hide(state)
            return
        cam = read_camera(self.viewer)
        mag = magnification(cam, state.geometry)
        if min(mag) <= 1 + 1e-9:
            self._hide(f"idle: zoom in to see LIIF ({min(mag):.2f} screen px per pixel now)")
            return
        plan = plan_view(cam, state.geometry, self.tile)
        if plan is None:
            self._hide("idle: the layer is out of view")
            return
        field_key = state.field_key(self._data_version)
        plan_id = (field_key, self.cell, plan.lattice.key, plan.tiles, plan.rows, plan.cols)
        if plan_id == self._plan_id:
            self._sync_style()
            return  # nothing changed (e.g. an event that did not move the view)
        self._state, self._plan, self._plan_id = state, plan, plan_id
        self._gen += 1
        channels = (4,) if state.rgb else ()
        buf = np.zeros(plan.shape + channels, np.float32)
        if not state.rgb:
            buf.fill(np.nan)
        self._missing = {}
        jobs = []
        for t in plan.tiles:
            key = (field_key, self.cell, plan.lattice.key, t.r0, t.r1, t.c0, t.c1)
            if key in self._cache:
                self._cache.move_to_end(key)
                self._paste(buf, plan, t, self._cache[key])
            else:
                self._missing[key] = t
                jobs.append(Job(key, plan.region(t), t.shape))
        self._buffer = buf
        self._unshown, self._dirty, self._fresh_plan = 0, False, True
        self._previewed = set()
        self.covered_time = time.perf_counter() if not self._missing else None
        if jobs:  # first, so the render thread starts while the overlay is updated
            spec = FieldSpec(field_key, state.prepare)
            self._thread.submit(Request(self._gen, spec, jobs, self.cell, self.preview))
            self._poll.start()
        else:
            self._thread.cancel(self._gen)
        ov = self._ensure_overlay()
        ov.data = buf
        ov.scale, ov.translate = plan.scale, plan.translate
        self._sync_style()
        self._report()

    def _paste(self, buf: np.ndarray, plan: ViewPlan, tile, values: np.ndarray) -> None:
        rs, cs = plan.slot(tile)
        if buf.ndim == 3:
            buf[rs, cs, :3] = values
            buf[rs, cs, 3] = 1.0
        else:
            buf[rs, cs] = values

    # -- results (main thread, collected from the render thread's outbox) ----------------
    @_timed
    def _drain(self) -> None:
        """Take everything the render thread has finished; refresh the overlay once."""
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
        covered = self.covered_time is None and self._missing.keys() <= self._previewed
        if self._dirty and (self._fresh_plan or covered or not self._missing or now - self._last_refresh >= REFRESH_S):
            self.overlay.refresh(thumbnail=not self._missing, extent=False, highlight=False)
            self._last_refresh = time.perf_counter()
            if self._unshown:
                self.tiles_shown += self._unshown
                self.last_tile_time = self._last_refresh
            if covered:
                self.covered_time = self._last_refresh
            self._unshown, self._dirty, self._fresh_plan = 0, False, False
        if pasted:
            self._report()
        if not self._thread.busy() and outbox.empty() and not self._dirty:
            self._poll.stop()

    def _from_current_field(self, key) -> bool:
        """False for a tile rendered from an older field (slice, data or model changed)."""
        return self._state is not None and key[0] == self._state.field_key(self._data_version)

    def _on_tile(self, key, values) -> bool:
        """Cache a finished tile; paste it if the current view needs it. True if pasted."""
        self.tiles_rendered += 1
        if not self._from_current_field(key):
            return False
        self._cache[key] = values
        self._cache.move_to_end(key)
        while len(self._cache) > 1 and sum(v.nbytes for v in self._cache.values()) > self._cache_limit:
            self._cache.popitem(last=False)
        tile = self._missing.pop(key, None)
        if tile is None or self._plan is None:
            return False  # not part of the current view: kept for later pans
        self._paste(self._buffer, self._plan, tile, values)
        self._unshown += 1
        self._dirty = True
        self._previewed.discard(key)
        return True

    def _on_preview(self, key, values) -> bool:
        """Paste a preview where the current view still lacks that tile."""
        tile = self._missing.get(key) if self._from_current_field(key) else None
        if tile is None or self._plan is None:
            return False
        self._paste(self._buffer, self._plan, tile, values)
        self._previewed.add(key)
        self._dirty = True
        return True

    def _report(self) -> None:
        if self._plan is None:
            return
        n = len(self._plan.tiles)
        done = n - len(self._missing)
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
        return self.attached and not self._timer.isActive() and not self._missing

    @property
    def encoded_tiles(self) -> int:
        """Encoder tiles computed so far for the current field (0 before the first render)."""
        fld = self._thread.field
        return 0 if fld is None else fld.tiles_encoded

    @property
    def encoded_pixels(self) -> int:
        """Input pixels run through the encoder so far for the current field, halos included."""
        fld = self._thread.field
        return 0 if fld is None else fld.pixels_encoded

    @property
    def plane_encoded(self) -> bool:
        """True once the displayed plane is encoded in the background (after the view settled;
        within the latent cache), so pans and zooms over it no longer wait for the encoder."""
        return self._thread.plane_encoded

    @property
    def pending_tiles(self) -> int:
        return len(self._missing)

    @property
    def plan(self) -> ViewPlan | None:
        """The current view's plan (lattice, tiles, overlay frame); None when hidden."""
        return self._plan

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
            if self.idle:
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


def attach(viewer, layer, model=None, *, device: str = "auto", precision: str = "auto", cell: str = "on",
           tile: int | None = None, debounce_ms: int = 80, preview: bool = True, encoder_tile: int = 32,
           cache_bytes: int = 512 << 20) -> LiveZoom:
    """Turn on live LIIF zoom for an image ``layer`` of ``viewer``.

    Parameters
    ----------
    viewer : napari.Viewer
    layer : napari.layers.Image or str
        The image layer (or its name). Labels and other layer types raise ``TypeError``.
    model : LiifModel, path or None
        A loaded model, a checkpoint file (official ``.pth`` or napari-liif ``.safetensors``),
        or None for the bundled default. Files are loaded on the render thread.
    device, precision : str
        Used when ``model`` is a path or None: ``auto|cpu|cuda|mps`` and ``auto|fp32|bf16|fp16``
        (``auto``: bf16 on CUDA and on CPUs with fast bf16 matrix products, fp32 elsewhere; the
        input and the bilinear residual stay fp32, so dark or narrow ranges do not band).
    cell : {"on", "off", "clamp"}
        Cell decoding mode (see :meth:`napari_liif.field.EncodedField.cell`).
    tile : int or None
        Screen tile size in screen pixels; smaller tiles show the first pixels sooner, larger
        ones have less overhead. None: 128 on a CPU, 512 on a GPU (where a 1920x1080 view is a
        few tiles instead of 135; chosen, not yet measured on a GPU).
    debounce_ms : int
        How long the camera must be still before rendering starts.
    preview : bool
        After the centre tile, show every other tile's samples on even rows and columns first
        (a quarter of them, as 2x2 blocks), then complete each tile with the rest: the view is
        covered sooner at no extra decoding. Skipped when the full pass is quick anyway.
    encoder_tile, cache_bytes : int
        Encoder tile size (input pixels) and the memory bound of the encoded-latent cache.

    Returns
    -------
    LiveZoom
        The controller: ``wait_idle(timeout)`` processes Qt events until the view is rendered,
        ``detach()`` removes the overlay and stops everything; ``status``, ``progress`` and
        ``detached`` are psygnal signals.

    Examples
    --------
    >>> import napari, napari_liif, skimage
    >>> viewer = napari.Viewer()
    >>> layer = viewer.add_image(skimage.data.camera())
    >>> live = napari_liif.attach(viewer, layer)
    >>> viewer.scene.camera.zoom = 4
    >>> live.wait_idle(60)
    """
    if isinstance(layer, str):
        layer = viewer.layers[layer]
    from ..engine import LiifModel

    if isinstance(model, LiifModel):
        loader = functools.partial(lambda m: m, model)
    else:
        loader = functools.partial(model_loader, model, device, precision)
    if tile is None:
        tile = default_tile(model.device if isinstance(model, LiifModel) else device)
    return LiveZoom(viewer, layer, loader, cell=cell, tile=tile, debounce_ms=debounce_ms, preview=preview,
                    encoder_tile=encoder_tile, cache_bytes=cache_bytes)
