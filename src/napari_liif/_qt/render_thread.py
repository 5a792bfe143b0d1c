"""The live-zoom render thread: one long-lived thread that always works on the newest request.

The main thread submits a :class:`Request` (a generation number, the field to render from and a
list of tiles, centre first). The thread renders the first tile (encoding only the small encoder
tiles under it, so it shows soon), then encodes the latents under all the others in large windows
(:meth:`EncodedField.prefetch`), then renders a *preview* of each of the others: a quarter of its
samples, every other row and column (the tile's grid ``[::2, ::2]``), shown as 2 x 2 blocks, so the
whole view is covered by LIIF soon; then the other three quarters of each tile (``[1::2, :]`` and
``[::2, 1::2]``), which completes it at no extra cost: a sliced grid holds the tile's own samples
and cell, so every value is the tile's. Previews are skipped when
the first tile's speed says the full pass takes under ``PREVIEW_MIN_S``. Each finished tile or
preview goes into an *outbox* queue that the main thread drains (with a timer). Submitting a newer
request makes the current render stop at its next output block (``EncodedField.render``'s ``should_stop``); a tile
interrupted that way is thrown away, a tile that finished is still posted, tagged with its key, so
the main thread can cache it.

Why a queue and not a Qt signal: with PySide6 6.12.0, every ``Signal.emit()`` called from Python
drops a reference to ``True`` (measured: 100 emits lower ``sys.getrefcount(True)`` by 100), and
the interpreter aborts once it reaches zero. The outbox needs no Python-side emit at all.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..latents import WINDOW_PX


@dataclass
class Job:
    key: tuple  # cache key of the tile (field, lattice, cell, tile)
    region: tuple[float, float, float, float]  # engine region, data pixel-edge units
    shape: tuple[int, int]


@dataclass
class FieldSpec:
    """How to build the encoded field: ``prepare()`` (run on the render thread) returns
    ``(source, shape, to_data)``: ``source(y0, y1, x0, x1)`` a window in [0, 1], the plane's
    ``shape``, and ``to_data`` mapping a render to the values that the overlay shows."""

    key: tuple
    prepare: Callable[[], tuple]


@dataclass
class Request:
    gen: int
    field: FieldSpec
    jobs: list[Job]
    cell: str = "on"
    preview: bool = True  # show each tile but the first as a quarter of its samples before the rest


#: a view whose full render is expected to take less than this many seconds gets no preview:
#: the preview costs nothing extra (its samples are a quarter of the tile's), but it is one more
#: overlay refresh and only helps when the wait is long (a CPU, not a GPU)
PREVIEW_MIN_S = 0.5


class RenderThread(threading.Thread):
    """Renders requests from ``submit``; ``stop`` ends it (between output blocks).

    Messages put in ``outbox``: ``("tile", gen, key, values)``, ``("preview", gen, key, values)``
    (the tile's (even, even) samples, each repeated over 2 x 2), ``("done", gen)``,
    ``("failed", gen, message)`` and ``("note", gen, message)``.
    """

    def __init__(self, loader: Callable[[], Any], *, encoder_tile: int = 32, cache_bytes: int = 512 << 20,
                 window_px: int = WINDOW_PX):
        super().__init__(name="napari-liif-live-zoom", daemon=True)
        self._loader = loader
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._encoder_tile = int(encoder_tile)
        self._cache_bytes = int(cache_bytes)
        self._window_px = int(window_px)
        self._cond = threading.Condition()
        self._request: Request | None = None
        self._stopping = False
        self._model = None
        self._field = None
        self._field_key = None
        self._to_data = None
        self._background_done = None  # the field whose plane the idle pass has encoded
        #: previews are skipped when the full pass should take less than this (seconds)
        self.preview_min_s = PREVIEW_MIN_S
        #: generation the main thread wants; anything older is abandoned
        self.wanted = 0
        #: generation being worked on, or None when idle
        self.working: int | None = None

    # -- main thread ------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        with self._cond:
            self.wanted = request.gen
            self._request = request
            self._cond.notify()

    def cancel(self, gen: int) -> None:
        """Abandon everything older than ``gen`` without starting new work."""
        with self._cond:
            self.wanted = gen
            self._request = None

    @property
    def field(self):
        """The encoded field in use (None before the first request)."""
        return self._field

    @property
    def plane_encoded(self) -> bool:
        """True once the background pass has encoded the whole displayed plane (or found that it
        does not fit the latent cache, which then holds what the views need)."""
        with self._cond:
            return self._field is not None and self._field is self._background_done

    def busy(self) -> bool:
        """True while a request is waiting or being rendered."""
        with self._cond:
            return self._request is not None or self.working is not None

    def set_loader(self, loader: Callable[[], Any]) -> None:
        """Use another model from the next request on (the encoded field is dropped)."""
        with self._cond:
            self._loader = loader
            self._model = None
            self._field = self._field_key = None

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self.wanted = -1
            self._request = None
            self._cond.notify()

    # -- render thread ----------------------------------------------------------------
    @staticmethod
    def _load(loader):
        """The model, warmed up on a GPU (its start-up then happens here, not in the first tile)."""
        model = loader()
        if model.device.type != "cpu":
            model.warmup()
        return model

    def _preload(self) -> None:
        """Load (and warm up) the model before the first request, so the first live tile pays
        neither; a failure is left for the first request to report."""
        with self._cond:
            loader = self._loader
            if self._model is not None or self._request is not None or self._stopping:
                return
        try:
            model = self._load(loader)
        except Exception:  # noqa: BLE001 - reported when a request needs the model
            return
        with self._cond:
            if self._loader is loader and self._model is None:
                self._model = model

    def _background_encode(self) -> None:
        """While idle, encode the rest of the displayed plane (within the latent cache; the
        visible area was encoded first by the requests), stopping at once when a request comes:
        once a view has settled, pans and zooms over the encoded area never wait for the
        encoder. Each field is completed at most once."""
        with self._cond:
            fld = self._field
            if fld is None or fld is self._background_done or self._request is not None or self._stopping:
                return
        fld.prefetch(None, should_stop=lambda: self._request is not None or self._stopping)
        with self._cond:
            if self._request is None and not self._stopping:
                self._background_done = fld  # finished (or refused: the plane exceeds the cache)

    def run(self) -> None:
        self._preload()
        while True:
            self._background_encode()
            with self._cond:
                while self._request is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    self.working = None
                    return
                req, self._request = self._request, None
                self.working = req.gen
            try:
                self._serve(req)
            except Exception as exc:  # noqa: BLE001 - any failure is reported to the UI, never raised in a thread
                self.outbox.put(("failed", req.gen, f"{type(exc).__name__}: {exc}"))
            finally:
                with self._cond:
                    self.working = None

    def _serve(self, req: Request) -> None:
        stale = lambda: self.wanted != req.gen  # noqa: E731
        with self._cond:
            loader, model = self._loader, self._model
            fld, key, to_data = self._field, self._field_key, self._to_data
        if model is None:
            self.outbox.put(("note", req.gen, "loading model"))
            model = self._load(loader)
        if fld is None or key != req.field.key or fld.model is not model:
            source, shape, to_data = req.field.prepare()
            fld = model.encode_source(source, shape, tile=self._encoder_tile, cache_bytes=self._cache_bytes,
                                      window_px=self._window_px)
        with self._cond:
            if self._loader is loader:  # not replaced meanwhile by set_loader
                self._model, self._field, self._field_key, self._to_data = model, fld, req.field.key, to_data
        if req.jobs and not self._render_jobs(fld, req, to_data, stale):
            return  # a newer request came in
        self.outbox.put(("done", req.gen))

    def _render_jobs(self, fld, req: Request, to_data, stale) -> bool:
        """The first tile; the latents of the others; their previews, if the full pass is
        expected to take longer than ``preview_min_s`` at the first tile's speed; then the
        others in full. Returns False if interrupted."""
        first, rest = req.jobs[0], req.jobs[1:]
        fld.prefetch(first.region)  # only the few small encoder tiles under it
        t = time.perf_counter()
        if not self._post(req, first, "tile", self._grid(fld, req, to_data, first, 0, 0, 1, stale)):
            return False
        rate = first.shape[0] * first.shape[1] / max(time.perf_counter() - t, 1e-6)  # samples per second
        if not rest:
            return True
        if not self._prefetch(fld, rest, stale):
            return False
        full_s = sum(j.shape[0] * j.shape[1] for j in rest) / rate
        if not (req.preview and full_s > self.preview_min_s):
            return all(self._post(req, job, "tile", self._grid(fld, req, to_data, job, 0, 0, 1, stale))
                       for job in rest)
        previews = {}
        for job in rest:  # samples (even, even): a quarter of each tile, shown as 2 x 2 blocks
            values = previews[job.key] = self._grid(fld, req, to_data, job, 0, 0, 2, stale)
            if not self._post(req, job, "preview", None if values is None else
                              values.repeat(2, 0).repeat(2, 1)[: job.shape[0], : job.shape[1]]):
                return False
        for job in rest:  # the other three quarters, then the tile is whole
            tile = self._complete(fld, req, to_data, job, previews.pop(job.key), stale)
            if not self._post(req, job, "tile", tile):
                return False
        return True

    def _complete(self, fld, req, to_data, job: Job, even, stale):
        """The full tile from its (even, even) samples plus renders of the odd rows and of the
        even rows' odd columns; None if interrupted."""
        (r, c), parts = job.shape, [(1, 0, (2, 1)), (0, 1, (2, 2))]  # (row0, col0, (row step, col step))
        tile = np.empty((r, c) + even.shape[2:], even.dtype)
        tile[0::2, 0::2] = even
        for r0, c0, (sr, sc) in parts:
            if r0 >= r or c0 >= c:
                continue  # a tile one sample high or wide has no odd rows or columns
            values = self._grid(fld, req, to_data, job, r0, c0, (sr, sc), stale)
            if values is None:
                return None
            tile[r0::sr, c0::sc] = values
        return tile

    @staticmethod
    def _grid(fld, req: Request, to_data, job: Job, r0: int, c0: int, step, stale):
        """Samples ``r0, r0 + step, ...`` x ``c0, c0 + step, ...`` of ``job``'s tile: its grid,
        sliced (same coordinates, same cell, so each value is the tile's); None if interrupted."""
        sr, sc = (step, step) if isinstance(step, int) else step
        stopped: list[bool] = []

        def should_stop():
            if stale():
                stopped.append(True)
                return True
            return False

        grid = fld.grid(job.region, job.shape, req.cell)[r0::sr, c0::sc]
        out = fld.render_grid(grid, should_stop=should_stop)
        return None if stopped else to_data(out)

    def _post(self, req: Request, job: Job, kind: str, values) -> bool:
        """Post a finished tile or preview; False (nothing posted) if it was interrupted."""
        if values is None:
            return False
        self.outbox.put((kind, req.gen, job.key, values))
        return True

    @staticmethod
    def _prefetch(fld, jobs: list[Job], stale) -> bool:
        """Encode the latents under ``jobs`` in large encoder windows (each pays the encoder's
        halo once, where tile-by-tile encoding would pay it per tile), window by window so a
        newer request interrupts it (see :meth:`EncodedField.prefetch`). False if interrupted."""
        regions = [j.region for j in jobs]
        union = (min(r[0] for r in regions), min(r[1] for r in regions),
                 max(r[2] for r in regions), max(r[3] for r in regions))
        fld.prefetch(union, should_stop=stale)
        return not stale()
