"""The renderer: one long-lived thread that always works on the newest :class:`Request`.

For a request it renders the centre tile of every source (encoding only the small encoder tiles
under it, so something shows soon), encodes the latents under the rest of the view in large
windows, then renders the rest in :mod:`batches <napari_liif.live.batches>` (few, large engine
calls): the first batch whole, then, if its speed says the others take longer than
``preview_min_s``, a *coarse pass* over them (each tile's samples on its even rows and columns,
a quarter, posted as previews) before their other three quarters (each tile posted whole).
Batches of several sources over the same samples (an image's channels) share each engine call.
Strided samples cost more each than whole tiles (fewer share a latent), so a pass that is fast
anyway goes without (the speed of the small centre tiles, used before, counted the engine's
fixed cost per call and the cell products, and sent most quiet zooms through the coarse pass);
``preview_min_s`` 0 asks for the coarse pass over every batch. Results go into ``outbox`` (a
queue the front end drains); a newer request stops the current one at the engine's next output
block. While idle, the displayed planes are encoded in the background, so later pans and zooms
never wait for the encoder.

A queue, not a Qt signal: with PySide6 6.12.0 every ``Signal.emit()`` from Python drops a
reference to ``True`` and the interpreter aborts once it reaches zero.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..grid import cell_size
from ..latents import WINDOW_PX
from .batches import Batch, make_batches, siblings, spread
from .keys import Done, Failed, Job, Kind, Note, Request, Result
from .port import Engine, Field, as_engine

#: a view whose rest is expected to render in under this many seconds gets no coarse pass: its
#: strided samples cost 1.3-1.6x as much each (fewer share a latent's gathered values), so it
#: delays the whole view for an earlier cover that is worth it only when the wait is long
#: (3 channels after a zoom, 2-core EPYC: whole 0.98 s without; covered 0.80 s, whole 1.60 s with)
PREVIEW_MIN_S = 1.0
#: samples per engine call (a batch of tiles) on a CPU, and on a GPU
CPU_BATCH, GPU_BATCH = 1 << 17, 1 << 22


class Refused(Exception):
    """A plane the user's options cannot show (e.g. limits under which the data would vanish):
    reported as its one line, without a type name."""


@dataclass
class Plane:
    """A source's plane as the renderer holds it: its key, the Prepared plane and its fields."""

    key: Any
    prepared: Any
    fields: list[Field]


class Renderer(threading.Thread):
    """Renders requests from ``submit``; ``stop`` ends it. ``loader()`` returns the model (a
    ``LiifModel`` or an :class:`~napari_liif.live.port.Engine`); it runs on this thread.
    ``cache_bytes`` bounds each field's latent cache: every live layer (channel) gets the room
    it would get alone, so a channel beside others is encoded, cached and rendered exactly as it
    would be on its own (split between channels, three 512² planes of the ``fast`` model each
    fell below what the idle pass needs, and every pan encoded again)."""

    def __init__(self, loader: Callable[[], Any], *, encoder_tile: int = 32, cache_bytes: int = 512 << 20,
                 window_px: int = WINDOW_PX, batch_samples: int | None = None):
        super().__init__(name="napari-liif-live-zoom", daemon=True)
        self._loader = loader
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._encoder_tile, self._cache_bytes, self._window_px = int(encoder_tile), int(cache_bytes), int(window_px)
        self.batch_samples = batch_samples
        self._cond = threading.Condition()
        self._request: Request | None = None
        self._stopping = False
        self._engine: Engine | None = None
        self._planes: dict[int, Plane] = {}
        # per field, what the idle pass has encoded: True (the whole plane) or the view it worked around
        self._background_done = weakref.WeakKeyDictionary()
        self._views: dict[int, tuple] = {}  # per source, the region of its last requested view
        self.preview_min_s = PREVIEW_MIN_S
        self.wanted = 0  # the generation the front end wants; older work is abandoned
        self.working: int | None = None  # the generation being rendered, None when idle

    # -- front end ----------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        with self._cond:
            self.wanted, self._request = request.gen, request
            self._cond.notify()

    def cancel(self, gen: int) -> None:
        """Abandon everything older than ``gen`` without starting new work."""
        with self._cond:
            self.wanted, self._request = gen, None

    @property
    def engine(self) -> Engine | None:
        """The engine in use (None before the model is loaded)."""
        with self._cond:
            return self._engine

    @property
    def fields(self) -> list[Field]:
        """The fields in use, of every source."""
        with self._cond:
            return [f for p in self._planes.values() for f in p.fields]

    @property
    def plane_encoded(self) -> bool:
        """True once the idle pass has encoded every displayed plane, or as much of it as its
        cache keeps around the last view (nothing more where the view alone exceeds that)."""
        with self._cond:
            work = self._idle_work()
            return bool(work) and all(self._background_done.get(f, False) in (True, v) for f, v in work)

    def _idle_work(self) -> list[tuple[Field, tuple | None]]:
        """Each displayed field with the last view of its source (call holding ``_cond``)."""
        return [(fld, self._views.get(sid)) for sid, p in self._planes.items() for fld in p.fields]

    def busy(self) -> bool:
        with self._cond:
            return self._request is not None or self.working is not None

    def set_loader(self, loader: Callable[[], Any]) -> None:
        """Use another model from the next request on (the planes are encoded again)."""
        with self._cond:
            self._loader, self._engine, self._planes = loader, None, {}

    def stop(self) -> None:
        with self._cond:
            self._stopping, self.wanted, self._request = True, -1, None
            self._cond.notify()

    # -- the thread -----------------------------------------------------------------------
    def _interrupted(self) -> bool:
        return self._request is not None or self._stopping

    def _load(self, loader) -> Engine:
        engine = as_engine(loader())
        engine.warmup()
        return engine

    def _preload(self) -> None:
        """Load the model before the first request; a failure is left for a request to report."""
        with self._cond:
            loader = self._loader
            if self._engine is not None or self._interrupted():
                return
        try:
            engine = self._load(loader)
        except Exception:  # noqa: BLE001 - reported when a request needs the model
            return
        with self._cond:
            if self._loader is loader and self._engine is None:
                self._engine = engine

    def _background_encode(self) -> None:
        """While idle, encode the rest of every displayed plane (or, where a plane's latents take
        more than half its cache, as much as fits around the last view), each once per view, until
        a request comes."""
        with self._cond:
            work = self._idle_work()
        for fld, view in work:
            with self._cond:
                if self._interrupted():
                    return
                if self._background_done.get(fld, False) in (True, view):
                    continue
            stopped = []  # asked and answered here: a request cancelled meanwhile must not count as done

            def stop():
                if self._interrupted():
                    stopped.append(True)
                return bool(stopped)

            whole = fld.encode_near(view, should_stop=stop)
            with self._cond:
                if stopped or self._interrupted():
                    return
                self._background_done[fld] = True if whole else view

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
            except Refused as exc:
                self.outbox.put(Failed(req.gen, str(exc)))
            except Exception as exc:  # noqa: BLE001 - reported to the front end, never raised in a thread
                self.outbox.put(Failed(req.gen, f"{type(exc).__name__}: {exc}"))
            finally:
                with self._cond:
                    self.working = None

    def _prepared(self, engine: Engine, loader, req: Request) -> dict[int, Plane] | None:
        """The request's planes prepared and opened as fields (nothing encoded yet), once per
        plane key; earlier ones kept for later views. None if superseded."""
        with self._cond:
            known = dict(self._planes)
        out = dict(known)
        for sid, spec in req.planes.items():
            if self.wanted != req.gen:
                return None
            have = known.get(sid)
            if have is not None and have.key == spec.key:
                continue
            try:
                prep = spec.prepare()
            except ValueError as exc:  # the options' own one-line refusal (intensity.user_map)
                raise Refused(str(exc)) from None
            flds = [engine.field(source, prep.shape, tile=self._encoder_tile, cache_bytes=self._cache_bytes,
                                 window_px=self._window_px) for _, source in prep.fields]
            out[sid] = Plane(spec.key, prep, flds)
        with self._cond:
            if self._loader is loader:  # not replaced meanwhile by set_loader
                self._engine, self._planes = engine, out
        return out

    def _serve(self, req: Request) -> None:
        views: dict[int, tuple] = {}
        for job in req.jobs:  # each source's whole view (its frame), else the union of its tiles
            r = job.frame.region if job.frame is not None else job.region
            v = views.get(job.source, r)
            views[job.source] = (min(v[0], r[0]), min(v[1], r[1]), max(v[2], r[2]), max(v[3], r[3]))
        with self._cond:
            self._views.update(views)
            loader, engine = self._loader, self._engine
        if engine is None:
            self.outbox.put(Note(req.gen, "loading model"))
            engine = self._load(loader)
        planes = self._prepared(engine, loader, req)
        if planes is None:
            return
        if req.jobs and not Pass(self, planes, req, engine).run():
            return  # a newer request came in
        self.outbox.put(Done(req.gen))


Group = tuple  # of Batch: batches over the same samples of different sources


def samples(g: Group) -> int:
    """Samples of every batch of a group."""
    return sum(b.samples for b in g)


class Pass:
    """One request's rendering: first tiles, encoding, the coarse pass, the fine pass. Batches of
    different sources over the same samples (the channels of an image) go together, a *group*:
    one engine call renders them all, their output blocks sharing the engine's workers."""

    def __init__(self, renderer: Renderer, planes: dict[int, Plane], req: Request, engine: Engine):
        self.r, self.planes, self.req, self.engine = renderer, planes, req, engine
        self.max_samples = renderer.batch_samples or (CPU_BATCH if engine.on_cpu else GPU_BATCH)
        self.align = 2 * engine.block  # tiles of a batch keep the engine's blocks (coarse ones too)

    def stale(self) -> bool:
        return self.r.wanted != self.req.gen

    def cell(self, job: Job):
        """The cell of ``job``'s whole view (the request's mode applied to its frame): one cell
        for every render of a view, so what is computed per latent and cell serves them all."""
        if job.frame is None:
            return self.req.cell
        shape = self.planes[job.source].prepared.shape
        return cell_size(shape, job.frame.region, job.frame.shape, self.req.cell)

    def groups(self, batches: list[Batch]) -> list[Group]:
        return siblings(batches, lambda b: (b.region, b.shape, self.cell(b.jobs[0])))

    def run(self) -> bool:
        """Render the request; False if a newer one interrupted it."""
        seen, first, rest = set(), [], []
        for job in self.req.jobs:
            (rest if job.source in seen else first).append(job)
            seen.add(job.source)
        for job in first:
            for fld in self.planes[job.source].fields:
                fld.encode(job.region)  # only the few small encoder tiles under it
        for g in self.groups([Batch((job,), job.region, job.shape) for job in first]):
            if not self.post_group(g, self.render(g)):
                return False
        if not rest:
            return True
        if not self.encode(rest):
            return False
        groups = self.groups(make_batches(rest, self.max_samples, self.align))
        if not self.req.preview:
            return all(self.post_group(g, self.render(g)) for g in groups)
        if self.r.preview_min_s > 0:  # 0: a coarse pass however fast the engine
            # the first group whole: its speed (a large call, its cell products already computed,
            # under the machine's load of the moment) says whether the others need a coarse pass
            t = time.perf_counter()
            if not self.post_group(groups[0], self.render(groups[0])):
                return False
            rate = samples(groups[0]) / max(time.perf_counter() - t, 1e-6)  # samples per second
            groups = groups[1:]
            if sum(samples(g) for g in groups) / rate <= self.r.preview_min_s:
                return all(self.post_group(g, self.render(g)) for g in groups)
        coarse = []
        for g in groups:  # the whole view covered first
            values = self.render(g, slice(0, None, 2), slice(0, None, 2))
            if values is None:
                return False
            for b, v in zip(g, values):
                self.post_coarse(b, v)
            coarse.append(values)
        for g, even in zip(groups, coarse):
            if not self.post_group(g, self.complete(g, even)):
                return False
        return True

    def encode(self, jobs: list[Job]) -> bool:
        """The latents under ``jobs``, source by source, in large encoder windows, and their
        products for the view's cell in one batch."""
        by_source: dict[int, list] = {}
        for j in jobs:
            by_source.setdefault(j.source, []).append(j.region)
        for sid, regions in by_source.items():
            union = (min(r[0] for r in regions), min(r[1] for r in regions),
                     max(r[2] for r in regions), max(r[3] for r in regions))
            job = next(j for j in jobs if j.source == sid)
            for fld in self.planes[sid].fields:
                fld.encode(union, should_stop=self.stale)
                if self.stale():
                    return False
                fld.prepare_cell(job.region, job.shape, self.cell(job), union)  # in one batch
        return True

    def render(self, g: Group, rows: slice = slice(None), cols: slice = slice(None)):
        """Each batch's overlay values at samples ``[rows, cols]`` (one engine call for the
        group); None if interrupted."""
        b0 = g[0]
        fields = [f for b in g for f in self.planes[b.source].fields]
        renders = self.engine.render(fields, b0.region, b0.shape, self.cell(b0.jobs[0]), rows, cols,
                                     should_stop=self.stale)
        if renders is None:
            return None
        out, k = [], 0
        for b in g:
            plane = self.planes[b.source]
            prep, n = plane.prepared, len(plane.fields)
            near = prep.nearest(b.region, b.shape)[rows, cols] if prep.carries else None
            out.append(prep.combine(renders[k:k + n], near))
            k += n
        return out

    def complete(self, g: Group, even: list[np.ndarray]):
        """Each batch whole from its coarse samples plus the other three quarters; None if
        interrupted."""
        h, w = g[0].shape
        outs = []
        for e in even:
            out = np.empty((h, w) + e.shape[2:], e.dtype)
            out[::2, ::2] = e
            outs.append(out)
        for rows, cols in ((slice(1, None, 2), slice(None)), (slice(0, None, 2), slice(1, None, 2))):
            if len(range(h)[rows]) == 0 or len(range(w)[cols]) == 0:
                continue  # one sample high or wide: nothing there
            values = self.render(g, rows, cols)
            if values is None:
                return None
            for out, v in zip(outs, values):
                out[rows, cols] = v
        return outs

    def post(self, kind: Kind, job: Job, values) -> None:
        self.r.outbox.put(Result(kind, self.req.gen, job.key, values))

    def post_group(self, g: Group, values) -> bool:
        """Each tile of each batch of ``g`` from the batches' values; False (nothing posted) if
        interrupted."""
        if values is None:
            return False
        for b, v in zip(g, values):
            for job in b.jobs:
                self.post(Kind.TILE, job, v[b.slot(job)].copy() if len(b.jobs) > 1 else v)
        return True

    def post_coarse(self, b: Batch, coarse: np.ndarray) -> None:
        """Each tile's preview from its batch's coarse samples."""
        for job in b.jobs:  # each starts at an even offset: its coarse samples are its own [::2, ::2]
            rs, cs = b.slot(job)
            mine = coarse[rs.start // 2:(rs.stop + 1) // 2, cs.start // 2:(cs.stop + 1) // 2]
            self.post(Kind.PREVIEW, job, spread(mine, job.shape))
