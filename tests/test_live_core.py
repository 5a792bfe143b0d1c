"""The live core without Qt or napari: plans, the tile cache across pans, a zoom that never runs
the encoder again, cancellation by a newer view, the coarse pass covering the whole view first,
several sources sharing one queue (an image's channels sharing each engine call), and batches
whose values are each tile's own, bit for bit. Work is counted through the engine protocol (input
pixels encoded, samples rendered, calls)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from helpers_models import tiny_model

from napari_liif.grid import cell_size
from napari_liif.live.batches import make_batches
from napari_liif.live.keys import Job, Kind, TileKey
from napari_liif.live.planes import SourceState
from napari_liif.live.port import ModelEngine
from napari_liif.live.session import Session
from napari_liif.live.viewport import Camera2D, LayerGeometry, Tile, plan_view

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def plane(seed=0, shape=(64, 96)) -> SourceState:
    img = (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)
    return SourceState(img, (), False, LayerGeometry(shape), (0.0, 255.0))


def settle(session: Session, timeout: float = 60.0) -> None:
    """Collect results until every tile of the current views is in."""
    deadline = time.monotonic() + timeout
    while session.pending_tiles or not session.settled:
        got = session.collect()
        session.refresh_due()
        assert got.error is None, got.error
        assert time.monotonic() < deadline, f"not settled: {session.tiles_done()}"
        time.sleep(0.002)


def engine_of(session: Session) -> ModelEngine:
    return session.renderer.engine


def samples(plan, tiles=None) -> int:
    return sum(t.shape[0] * t.shape[1] for t in (plan.tiles if tiles is None else tiles))


def per_tile(state, fld, plan, coarse: bool) -> dict:
    """Each tile rendered on its own from the session's latents, with the view's cell, in the
    passes the renderer uses (whole, or coarse then the other three quarters)."""
    prep, out = state.prepare(), {}
    whole = Tile((0, 0), plan.rows[0], plan.rows[1], plan.cols[0], plan.cols[1])
    cell = cell_size(state.geometry.shape, plan.region(whole), plan.shape, "on")
    passes = [(0, 0, 2, 2), (1, 0, 2, 1), (0, 1, 2, 2)] if coarse else [(0, 0, 1, 1)]
    for t in plan.tiles:
        v = np.empty(t.shape, np.float32)
        for a, b, sr, sc in passes:
            if a < t.shape[0] and b < t.shape[1]:
                rows, cols = slice(a, None, sr), slice(b, None, sc)
                v[rows, cols] = prep.combine([fld.render(plan.region(t), t.shape, cell, rows, cols)])
        out[t] = v
    return out


def test_a_plan_asks_for_its_tiles_and_says_why_it_shows_nothing(model):
    state = plane()
    s = Session(lambda: model, 1, tile=32)
    try:
        (p,) = s.view(Camera2D((32.0, 48.0), 0.9, (100, 120)), {0: state})
        assert p.message.startswith("idle: zoom in") and s.sources[0].plan is None and s.pending_tiles == 0
        (p,) = s.view(Camera2D((500.0, 500.0), 4.0, (100, 120)), {0: state})
        assert p.message == "idle: the layer is out of view"
        (p,) = s.view(Camera2D((32.0, 48.0), 4.0, (100, 120)), {0: "LIIF zoom works in the 2D view"})
        assert p.message == "LIIF zoom works in the 2D view"
        cam = Camera2D((32.3, 48.1), 4.0, (100, 120))
        (p,) = s.view(cam, {0: state})
        plan = plan_view(cam, state.geometry, 32)
        assert p.moved and p.message is None and s.sources[0].plan == plan
        assert s.tiles_done() == (0, len(plan.tiles))
        (p,) = s.view(cam, {0: state})  # the same view again: nothing new asked
        assert not p.moved and s.gen == 1
        settle(s)
        assert s.tiles_done() == (len(plan.tiles),) * 2 and engine_of(s).samples_rendered == samples(plan)
    finally:
        s.close()


def test_a_pan_renders_only_new_samples_and_a_zoom_never_encodes_again(model):
    state = plane(1)
    s = Session(lambda: model, 1, tile=32)
    try:
        cam = Camera2D((32.0, 48.0), 4.0, (128, 192))  # the screen starts on a tile corner
        s.view(cam, {0: state})
        settle(s)
        eng, first = engine_of(s), s.sources[0].plan
        assert eng.samples_rendered == samples(first) == 128 * 192
        buffer = s.sources[0].buffer
        s.view(Camera2D((32.0, 48.0 + 32 / 4), 4.0, (128, 192)), {0: state})  # one tile (32 px) right
        settle(s)
        assert eng.samples_rendered - 128 * 192 == 128 * 32  # the column of tiles it exposed, nothing more
        # the same array refilled (the overlay keeps its data), every tile the new view's own
        src = s.sources[0]
        assert src.buffer is buffer
        for t, want in per_tile(state, s.renderer.fields[0], src.plan, coarse=False).items():
            assert np.abs(src.buffer[src.plan.slot(t)] - want).max() < 1e-3, t
        n0 = eng.samples_rendered
        s.view(Camera2D((32.0 + 40 / 4, 48.0 - 24 / 4), 4.0, (128, 192)), {0: state})  # 40 and 24 px
        settle(s)
        plan = s.sources[0].plan
        new = [t for t in plan.tiles if t not in set(first.tiles)]
        assert 0 < len(new) < len(plan.tiles)
        deadline = time.monotonic() + 30
        while not s.renderer.plane_encoded:  # the idle pass encodes the rest of the plane
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pixels, n1 = eng.pixels_encoded, eng.samples_rendered
        assert pixels > 0
        s.view(Camera2D((30.0, 50.0), 5.0, (128, 192)), {0: state})  # a zoom: a new lattice
        settle(s)
        assert eng.pixels_encoded == pixels  # the encoder never ran again
        assert eng.samples_rendered - n1 == samples(s.sources[0].plan)
    finally:
        s.close()


def test_a_plane_larger_than_half_the_cache_is_encoded_around_the_view_while_idle(model):
    """Where a plane's latents take more than half the latent cache (a 512² plane of the fast
    model in fp32: 419 MB of 512 MiB), the idle pass used to encode nothing and every pan ran the
    encoder; now it encodes the widest margin around the view that fits, and a pan within it
    encodes nothing."""
    state = plane(4, (64, 96))
    per = ModelEngine(model).field(state.prepare().fields[0][1], (64, 96), tile=8, cache_bytes=1 << 30,
                                   window_px=None).encoded.latent_bytes(1, 1)
    s = Session(lambda: model, 1, tile=32, encoder_tile=8, cache_bytes=2 * per * 48 * 72)  # half: 48 x 72
    try:
        s.view(Camera2D((32.0, 48.0), 4.0, (128, 192)), {0: state})  # 32 x 48 latents in view
        settle(s)
        deadline = time.monotonic() + 30
        while not s.renderer.plane_encoded:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        fld, eng = s.renderer.fields[0].encoded, engine_of(s)
        assert fld.cached_bytes() <= 2 * per * 48 * 72
        pixels = eng.pixels_encoded
        s.view(Camera2D((32.0, 48.0 + 16 / 4), 4.0, (128, 192)), {0: state})  # 4 latents right: inside
        settle(s)
        assert eng.pixels_encoded == pixels  # more than the view was encoded ...
        s.view(Camera2D((32.0, 48.0 + 160 / 4), 4.0, (128, 192)), {0: state})  # 40 latents right
        settle(s)
        assert eng.pixels_encoded > pixels  # ... and not the whole plane
    finally:
        s.close()


class GatedEngine(ModelEngine):
    """An engine whose first render waits until ``gate`` is set (``started`` says it is waiting)."""

    def __init__(self, model):
        super().__init__(model)
        self.started, self.gate = threading.Event(), threading.Event()

    def render(self, *args, **kwargs):
        if not self.gate.is_set():
            self.started.set()
            self.gate.wait(30)
        return super().render(*args, **kwargs)


def test_a_newer_view_cancels_the_older_one(model):
    state = plane(2)
    engine = GatedEngine(model)
    s = Session(lambda: engine, 1, tile=32)
    got = []
    s.listeners.append(got.append)
    try:
        s.view(Camera2D((30.0, 40.0), 4.0, (96, 128)), {0: state})
        assert engine.started.wait(30)  # the first view's centre tile is being rendered
        cam = Camera2D((34.1, 52.7), 5.5, (96, 128))
        s.view(cam, {0: state})
        engine.gate.set()
        settle(s)
        assert {r.gen for r in got} == {2}  # the first view's render stopped: nothing of it came
        plan = s.sources[0].plan
        assert engine.samples_rendered == samples(plan)
        ref = per_tile(state, s.renderer.fields[0], plan, coarse=False)
        for t, want in ref.items():
            assert np.array_equal(s.sources[0].buffer[plan.slot(t)], want)
    finally:
        engine.gate.set()
        s.close()


def test_the_coarse_pass_covers_the_view_first_and_no_sample_is_rendered_twice(model):
    """Tiles of 128 (twice the CPU's output block): the rest of the view goes in a few large
    calls, a coarse pass over all of it before any full tile but the centre one, and each
    tile's values are those of the tile rendered on its own in the same passes (a batch keeps
    each tile's output blocks; the coordinates of its grid may round differently, ~1e-7)."""
    state = plane(3, (96, 160))
    s = Session(lambda: model, 1, tile=128)
    s.renderer.preview_min_s = 0.0
    order = []
    s.listeners.append(lambda r: order.append(r.kind))
    try:
        cam = Camera2D((48.3, 80.6), 4.0, (320, 560))
        s.view(cam, {0: state})
        settle(s)
        plan, eng = s.sources[0].plan, engine_of(s)
        n = len(plan.tiles)
        assert order == [Kind.TILE] + [Kind.PREVIEW] * (n - 1) + [Kind.TILE] * (n - 1)
        assert eng.samples_rendered == samples(plan)  # coarse + the rest: every sample once
        batches = make_batches([Job(TileKey(0, None, "on", plan.lattice.key, t.r0, t.r1, t.c0, t.c1), plan.region(t), t.shape)
                                for t in plan.tiles[1:]], 1 << 17, 128)
        assert len(batches) < n - 1
        completions = sum((b.shape[0] > 1) + (b.shape[1] > 1) for b in batches)
        assert eng.render_calls == 1 + len(batches) + completions  # centre tile; coarse + completions per batch
        ref = per_tile(state, s.renderer.fields[0], plan, coarse=True)
        for t in plan.tiles[1:]:
            assert np.abs(s.sources[0].buffer[plan.slot(t)] - ref[t]).max() < 1e-3, t  # uint8 units
        assert s.covered_time is not None and s.covered_time <= s.last_tile_time
    finally:
        s.close()


def test_batches_cover_every_tile_once_with_the_tiles_own_geometry():
    cam = Camera2D((100.3, 150.7), 4.0, (768, 1024))
    plan = plan_view(cam, LayerGeometry((300, 400)), 128)
    jobs = [Job(TileKey(0, None, "on", plan.lattice.key, t.r0, t.r1, t.c0, t.c1), plan.region(t), t.shape) for t in plan.tiles]
    for limit in (1, 1 << 15, 1 << 17, 1 << 22):
        batches = make_batches(jobs, limit, 128)
        keys = [j.key for b in batches for j in b.jobs]
        assert sorted(keys, key=lambda k: k.span) == sorted((j.key for j in jobs), key=lambda k: k.span)
        for b in batches:
            r0, c0 = b.origin
            whole = Tile((0, 0), r0, r0 + b.shape[0], c0, c0 + b.shape[1])
            assert b.region == plan.region(whole)  # the same lattice edges as the tiles'
            assert b.samples == sum(j.samples for j in b.jobs) and (b.samples <= limit or len(b.jobs) == 1)
            for j in b.jobs[:-1]:
                rs, cs = b.slot(j)
                assert rs.start % 2 == cs.start % 2 == 0
        assert jobs[0] in batches[0].jobs  # centre first stays first
    assert len(make_batches(jobs, 1 << 22, 128)) < len(jobs) / 4


def test_several_sources_share_one_queue(model):
    a, b = plane(4), plane(5)
    s = Session(lambda: model, 2, tile=32, preview=False)
    got = []
    s.listeners.append(got.append)
    try:
        cam = Camera2D((31.2, 47.9), 4.0, (96, 128))
        s.view(cam, {0: a, 1: b})
        settle(s)
        first = [r.key for r in got[:2]]
        assert sorted(k.source for k in first) == [0, 1] and first[0].span == first[1].span
        assert {r.gen for r in got} == {1} and len(got) == 2 * len(s.sources[0].plan.tiles)
        for src, state in zip(s.sources, (a, b)):
            fld = s.renderer.fields[src.sid]
            for t, want in per_tile(state, fld, src.plan, coarse=False).items():
                assert np.array_equal(src.buffer[src.plan.slot(t)], want)
        assert not np.array_equal(s.sources[0].buffer, s.sources[1].buffer)
    finally:
        s.close()


def test_a_zoom_runs_the_latent_mlp_once_per_latent_in_one_batch():
    """LM-LIIF at a zoom where the tiles' own grids would each have their own cell (5.3): the
    view's products per (latent, cell) are computed in one batch, each latent once, and the
    overlay equals the engine's render of each tile."""
    from lmliif_helpers import build_lmliif, lmliif_spec

    from napari_liif.engine import LiifModel

    spec = lmliif_spec(bilinear_residual=True)
    model = LiifModel(build_lmliif(spec, seed=1, out_gain=0.2), spec, device="cpu")
    calls = []
    real = model.family.cell_products
    model.family.cell_products = lambda prods, rel: calls.append(prods.shape[:-1].numel()) or real(prods, rel)
    state = plane(6, (64, 80))
    s = Session(lambda: model, 1, tile=32, preview=False)
    try:
        s.view(Camera2D((30.2, 41.7), 4.0, (96, 128)), {0: state})
        settle(s)
        calls.clear()
        cam = Camera2D((31.9, 40.3), 5.3, (96, 128))
        s.view(cam, {0: state})
        settle(s)
        plan = s.sources[0].plan
        rows = plan.region(Tile((0, 0), plan.rows[0], plan.rows[1], plan.cols[0], plan.cols[1]))
        # the centre tile's chunks as it reaches them, then the rest of the view in one batch
        assert len(calls) <= 1 + 4 and max(calls) == calls[-1]
        assert sum(calls) <= (rows[2] - rows[0] + 3) * (rows[3] - rows[1] + 3) + 4 * 32 * 32
        fld = model.encode_source(state.prepare().fields[0][1], state.geometry.shape)
        prep = state.prepare()
        for t in plan.tiles:
            want = prep.combine([fld.render(plan.region(t), t.shape)])
            assert np.abs(s.sources[0].buffer[plan.slot(t)] - want).max() < 1e-3, t
    finally:
        s.close()


def test_channels_of_one_image_share_each_engine_call(model):
    """Three sources of one geometry (an image's channels) go through the engine in the calls one
    source needs, three times the samples each, and each channel is exactly as it is alone; a
    source of another geometry beside them is rendered in calls of its own."""
    cam = Camera2D((31.2, 47.9), 4.0, (96, 260))
    states = [plane(6), plane(7), plane(8)]
    alone = Session(lambda: model, 1, tile=32, preview=False)
    together = Session(lambda: model, 3, tile=32, preview=False)
    try:
        alone.view(cam, {0: states[0]})
        settle(alone)
        together.view(cam, {k: s for k, s in enumerate(states)})
        settle(together)
        one, three = engine_of(alone), engine_of(together)
        assert one.render_calls > 1 and three.render_calls == one.render_calls
        assert three.samples_rendered == 3 * one.samples_rendered == 3 * samples(alone.sources[0].plan)
        assert np.array_equal(together.sources[0].buffer, alone.sources[0].buffer)
        for src, state in zip(together.sources, states):
            fld = together.renderer.fields[src.sid]
            for t, want in per_tile(state, fld, src.plan, coarse=False).items():
                assert np.array_equal(src.buffer[src.plan.slot(t)], want)
        odd = plane(9, (64, 80))  # another shape: its tiles lie elsewhere, its calls are its own
        calls = three.render_calls
        together.view(cam, {0: states[0], 1: states[1], 2: odd})
        settle(together)
        src = together.sources[2]
        assert three.render_calls - calls == len(make_batches(
            [Job(TileKey(2, None, "on", src.plan.lattice.key, t.r0, t.r1, t.c0, t.c1), src.plan.region(t), t.shape)
             for t in src.plan.tiles[1:]], 1 << 17, 2 * three.block)) + 1  # its centre tile, then its batches
        for t, want in per_tile(odd, together.renderer.fields[2], src.plan, coarse=False).items():
            assert np.array_equal(src.buffer[src.plan.slot(t)], want)
    finally:
        alone.close()
        together.close()
