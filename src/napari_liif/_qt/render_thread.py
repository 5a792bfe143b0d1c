"""The live-zoom render thread: one long-lived thread that always works on the newest request.

The main thread submits a :class:`Request` (a generation number, the sources to render from and
a list of tiles of all of them, centre first). The thread renders the first tile of every source
(encoding only the small encoder tiles under it, so it shows soon), then encodes the latents under all the others in large windows
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
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..latents import WINDOW_PX


@dataclass
class Job:
    key: tuple  # cache key of the tile: (source, field, cell, lattice, tile range)
    region: tuple[float, float, float, float]  # engine region, data pixel-edge units
    shape: tuple[int, int]

    @property
    def source(self):
        return self.key[0]


@dataclass
class FieldSpec:
    """How to build one source's encoded fields: ``prepare()`` (run on the render thread) returns
    a :class:`~napari_liif._qt.layer_state.Prepared`: its ``fields`` (``[(name, source)]``, each
    ``source(y0, y1, x0, x1)`` a window in [0, 1]), ``shape``, ``combine(renders, near)`` (the
    renders of a tile's fields to the values the overlay shows), ``nearest(region, shape)``
    (the raw data under each sample, for the values a map cannot hold) and ``carries`` (whether
    there can be any)."""

    key: tuple
    prepare: Callable[[], Any]


@dataclass
class Request:
    gen: int
    fields: dict  # source key -> FieldSpec
    jobs: list[Job]  # centre first; the tiles of all sources interleaved
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

    One request holds the tiles of every live source (each channel of a stack, say), interleaved
    centre first: one scheduler for all, so the middle of the view sharpens first in every channel.
    Each source is prepared and encoded once per field key and kept while requests name it.
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
        self._sources: dict = {}  # source key -> (field key, Prepared, [EncodedField per field])
        self._background_done = weakref.WeakSet()  # the fields whose plane the idle pass has encoded
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
    def fields(self) -> list:
        """The encoded fields in use, of every source (empty before the first request)."""
        with self._cond:
            return [f for _, _, flds in self._sources.values() for f in flds]

    @property
    def field(self):
        """The first encoded field in use (None before the first request)."""
        flds = self.fields
        return flds[0] if flds else None

    @property
    def plane_encoded(self) -> bool:
        """True once the background pass has encoded the whole displayed plane of every source
        (or found that one does not fit its latent cache, which then holds what the views need)."""
        flds = self.fields
        with self._cond:
            return bool(flds) and all(f in self._background_done for f in flds)

    def busy(self) -> bool:
        """True while a request is waiting or being rendered."""
        with self._cond:
            return self._request is not None or self.working is not None

    def set_loader(self, loader: Callable[[], Any]) -> None:
        """Use another model from the next request on (the encoded fields are dropped)."""
        with self._cond:
            self._loader = loader
            self._model = None
            self._sources = {}

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
        """While idle, encode the rest of every source's displayed plane (within the latent cache;
        the visible area was encoded first by the requests), stopping at once when a request
        comes: once a view has settled, pans and zooms over the encoded area never wait for the
        encoder. Each field is completed at most once."""
        for fld in self.fields:
            with self._cond:
                if fld in self._background_done or self._request is not None or self._stopping:
                    if self._request is not None or self._stopping:
                        return
                    continue
            fld.prefetch(None, should_stop=lambda: self._request is not None or self._stopping)
            with self._cond:
                if self._request is not None or self._stopping:
                    return
                self._background_done.add(fld)  # finished (or refused: the plane exceeds the cache)

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

    def _encoded(self, model, loader, req: Request) -> dict | None:
        """``{source key: (field key, Prepared, fields)}``: the request's sources prepared and wrapped
        for the encoder (lazily: nothing is encoded here) once per field key, and those of earlier
        requests kept for later views; None if superseded."""
        with self._cond:
            known = dict(self._sources)
        out, per_field = dict(known), max(1, self._cache_bytes // max(1, len(req.fields)))
        for src, spec in req.fields.items():
            if self.wanted != req.gen:
                return None
            have = known.get(src)
            if have is not None and have[0] == spec.key and all(f.model is model for f in have[2]):
                out[src] = have
                continue
            prep = spec.prepare()
            flds = [model.encode_source(source, prep.shape, tile=self._encoder_tile, cache_bytes=per_field,
                                        window_px=self._window_px) for _, source in prep.fields]
            out[src] = (spec.key, prep, flds)
        with self._cond:
            if self._loader is loader:  # not replaced meanwhile by set_loader
                self._model, self._sources = model, out
        return out

    def _serve(self, req: Request) -> None:
        stale = lambda: self.wanted != req.gen  # noqa: E731
        with self._cond:
            loader, model = self._loader, self._model
        if model is None:
            self.outbox.put(("note", req.gen, "loading model"))
            model = self._load(loader)
        sources = self._encoded(model, loader, req)
        if sources is None:
            return
        if req.jobs and not self._render_jobs(sources, req, stale):
            return  # a newer request came in
        self.outbox.put(("done", req.gen))

    def _render_jobs(self, sources: dict, req: Request, stale) -> bool:
        """The first tile of every source; the latents of the others; their previews, if the full
        pass is expected to take longer than ``preview_min_s`` at the first tiles' speed; then the
        others in full. Returns False if interrupted."""
        seen, first, rest = set(), [], []
        for job in req.jobs:
            (rest if job.source in seen else first).append(job)
            seen.add(job.source)
        t = time.perf_counter()
        for job in first:
            for fld in sources[job.source][2]:
                fld.prefetch(job.region)  # only the few small encoder tiles under it
            if not self._post(req, job, "tile", self._grid(sources, req, job, 0, 0, 1, stale)):
                return False
        n_first = sum(j.shape[0] * j.shape[1] for j in first)
        rate = n_first / max(time.perf_counter() - t, 1e-6)  # samples per second
        if not rest:
            return True
        if not self._prefetch(sources, rest, stale):
            return False
        full_s = sum(j.shape[0] * j.shape[1] for j in rest) / rate
        if not (req.preview and full_s > self.preview_min_s):
            return all(self._post(req, job, "tile", self._grid(sources, req, job, 0, 0, 1, stale)) for job in rest)
        previews = {}
        for job in rest:  # samples (even, even): a quarter of each tile, shown as 2 x 2 blocks
            values = previews[job.key] = self._grid(sources, req, job, 0, 0, 2, stale)
            if not self._post(req, job, "preview", None if values is None else
                              values.repeat(2, 0).repeat(2, 1)[: job.shape[0], : job.shape[1]]):
                return False
        for job in rest:  # the other three quarters, then the tile is whole
            tile = self._complete(sources, req, job, previews.pop(job.key), stale)
            if not self._post(req, job, "tile", tile):
                return False
        return True

    def _complete(self, sources, req, job: Job, even, stale):
        """The full tile from its (even, even) samples plus renders of the odd rows and of the
        even rows' odd columns; None if interrupted."""
        (r, c), parts = job.shape, [(1, 0, (2, 1)), (0, 1, (2, 2))]  # (row0, col0, (row step, col step))
        tile = np.empty((r, c) + even.shape[2:], even.dtype)
        tile[0::2, 0::2] = even
        for r0, c0, (sr, sc) in parts:
            if r0 >= r or c0 >= c:
                continue  # a tile one sample high or wide has no odd rows or columns
            values = self._grid(sources, req, job, r0, c0, (sr, sc), stale)
            if values is None:
                return None
            tile[r0::sr, c0::sc] = values
        return tile

    @staticmethod
    def _grid(sources, req: Request, job: Job, r0: int, c0: int, step, stale):
        """Samples ``r0, r0 + step, ...`` x ``c0, c0 + step, ...`` of ``job``'s tile, from each of
        its source's fields: their grid, sliced (same coordinates, same cell, so each value is
        the tile's), combined into the overlay's values; None if interrupted."""
        sr, sc = (step, step) if isinstance(step, int) else step
        stopped: list[bool] = []

        def should_stop():
            if stale():
                stopped.append(True)
                return True
            return False

        _, prep, flds = sources[job.source]
        renders = []
        for fld in flds:
            grid = fld.grid(job.region, job.shape, req.cell)[r0::sr, c0::sc]
            renders.append(fld.render_grid(grid, should_stop=should_stop))
            if stopped:
                return None
        near = prep.nearest(job.region, job.shape)[r0::sr, c0::sc] if prep.carries else None
        return prep.combine(renders, near)

    def _post(self, req: Request, job: Job, kind: str, values) -> bool:
        """Post a finished tile or preview; False (nothing posted) if it was interrupted."""
        if values is None:
            return False
        self.outbox.put((kind, req.gen, job.key, values))
        return True

    @staticmethod
    def _prefetch(sources, jobs: list[Job], stale) -> bool:
        """Encode the latents under ``jobs`` in large encoder windows, source by source (each pays
        the encoder's halo once, where tile-by-tile encoding would pay it per tile), window by
        window so a newer request interrupts it (see :meth:`EncodedField.prefetch`). False if
        interrupted."""
        by_source: dict = {}
        for j in jobs:
            by_source.setdefault(j.source, []).append(j.region)
        for src, regions in by_source.items():
            union = (min(r[0] for r in regions), min(r[1] for r in regions),
                     max(r[2] for r in regions), max(r[3] for r in regions))
            for fld in sources[src][2]:
                fld.prefetch(union, should_stop=stale)
                if stale():
                    return False
        return not stale()
