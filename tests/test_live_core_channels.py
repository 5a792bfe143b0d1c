"""Several channels live at once, and live zoom through the one plane codec, without Qt or napari.

Channels: each live channel is encoded, cached and rendered exactly as it would be alone (the
latent cache is each layer's, not split between them), so a pan renders only the samples it
exposes and encodes nothing once the planes are encoded, and a zoom never runs the encoder again.
Work is counted through the engine protocol (input pixels encoded, samples rendered).

Codec: the live overlay's values follow the batch paths' rules (:class:`napari_liif.codec.PlaneCodec`):
renders beyond [0, 1] come back clipped to the map's range, user limits are checked against the
data (:func:`napari_liif.intensity.user_map`) and their results bounded to the data's range."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pytest
from helpers_models import tiny_model

from napari_liif.live.planes import Options, SourceState
from napari_liif.live.session import Session
from napari_liif.live.viewport import Camera2D, LayerGeometry

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPE = (64, 96)
COLD = Camera2D((32.0, 48.0), 4.0, (128, 192))  # the screen starts on a tile corner
PAN = Camera2D((32.0, 48.0 + 32 / 4), 4.0, (128, 192))  # one 32-pixel tile to the right
ZOOM = Camera2D((30.0, 50.0), 5.0, (128, 192))  # a new lattice


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def channel(k: int) -> SourceState:
    """A uint16 channel with a range of its own (so a map of its own)."""
    rng = np.random.default_rng(10 + k)
    img = (rng.random(SHAPE) * (1000 * (k + 1)) + 300 * k).astype(np.uint16)
    return SourceState(img, (), False, LayerGeometry(SHAPE), (0.0, 65535.0))


def settle(session: Session, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while session.pending_tiles or not session.settled:
        got = session.collect()
        session.refresh_due()
        assert got.error is None, got.error
        assert time.monotonic() < deadline, f"not settled: {session.tiles_done()}"
        time.sleep(0.002)


def encoded(session: Session, timeout: float = 60.0) -> None:
    """Wait for the idle pass to encode every displayed plane."""
    deadline = time.monotonic() + timeout
    while not session.renderer.plane_encoded:
        assert time.monotonic() < deadline, "the idle pass did not encode the planes"
        time.sleep(0.005)


def views(model, states: dict, **kw) -> tuple[list, list]:
    """Buffers of every source after the cold view, the pan and the zoom, and the engine's work
    after each once the idle pass has encoded the planes (as a user pausing would)."""
    s = Session(lambda: model, len(states), tile=32, preview=False, **kw)
    shown, work = [], []
    try:
        for cam in (COLD, PAN, ZOOM):
            s.view(cam, states)
            settle(s)
            shown.append([src.buffer.copy() for src in s.sources])
            encoded(s)
            eng = s.renderer.engine
            work.append((eng.pixels_encoded, eng.samples_rendered))
    finally:
        s.close()
    return shown, work


def test_three_channels_live_equal_each_channel_live_alone(model):
    states = {k: channel(k) for k in range(3)}
    together, work3 = views(model, states)
    alone = [views(model, {0: states[k]}) for k in range(3)]
    for v in range(3):
        for k in range(3):
            assert np.array_equal(together[v][k], alone[k][0][v][0]), (v, k)  # bit for bit
        # the work of three channels is the three channels' work alone, no more
        assert work3[v] == tuple(sum(a[1][v][i] for a in alone) for i in range(2))
    assert not np.array_equal(together[0][0], together[0][1])


def test_three_channels_pan_renders_only_new_samples_and_never_encodes_again(model):
    """A latent budget that holds one plane with the room the idle pass asks for (twice its
    latents), and not a third of that: each channel keeps its own plane encoded."""
    probe = model.encode_source(lambda y0, y1, x0, x1: np.zeros((y1 - y0, x1 - x0), np.float32), SHAPE)
    budget = 2 * probe.latent_bytes(*SHAPE) + 64
    states = {k: channel(k) for k in range(3)}
    _, work = views(model, states, cache_bytes=budget)
    (px0, n0), (px1, n1), (px2, n2) = work
    assert n0 == 3 * 128 * 192  # the cold view: every channel's samples once
    assert n1 - n0 == 3 * 128 * 32  # the pan: the column of tiles it exposed, in each channel
    assert px1 == px0 > 0  # the idle pass encoded all three planes; the pan encoded nothing
    assert n2 - n1 == 3 * 128 * 192 and px2 == px1  # the zoom: a whole new view, no encoder


def test_user_limits_under_which_the_data_vanishes_are_refused_in_one_line(model):
    img = np.full(SHAPE, 100, np.uint16)
    img[::2, ::3] = 110
    want = ("limits (0, 65535) on data ranging from 100 to 110: the data would span only 0.000153 of the "
            "model's [0, 1] range (it needs at least 1/100 to survive); give limits close to the data's "
            "range (e.g. 100,110) or none (the robust range)")
    mem = SourceState(img, (), False, LayerGeometry(SHAPE), (100.0, 110.0), options=Options.of(limits=(0, 65535)))
    lazy = SourceState(da.from_array(img, chunks=32), (), False, LayerGeometry(SHAPE), (100.0, 110.0),
                       options=Options.of(limits=(0, 65535)))
    for state in (mem, lazy):
        with pytest.raises(ValueError) as err:
            state.prepare()
        assert str(err.value) == want
    s = Session(lambda: model, 1, tile=32)
    try:
        s.view(COLD, {0: mem})
        deadline = time.monotonic() + 60
        while (got := s.collect()).error is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert got.error == want  # the line as it is, no type name
        assert s.renderer.engine.samples_rendered == 0 and s.renderer.engine.pixels_encoded == 0
    finally:
        s.close()


@pytest.mark.parametrize("lazy", [False, True])
def test_user_limits_bound_the_overlay_to_the_data_inside_them(lazy):
    img = np.full(SHAPE, 100, np.uint16)
    img[10:20, 30:40] = 900
    data = da.from_array(img, chunks=32) if lazy else img
    prep = SourceState(data, (), False, LayerGeometry(SHAPE), (100.0, 900.0),
                       options=Options.of(limits=(0, 1000))).prepare()
    u = np.array([[0.0, 0.25, 0.5], [0.95, 1.0, 1.3]], np.float32)
    out = prep.combine([np.repeat(u[..., None], 3, -1)])
    # v = 1000 u, then bounded to the data's range inside the limits, [100, 900]
    assert out.dtype == np.float32 and out.tolist() == [[100.0, 250.0, 500.0], [900.0, 900.0, 900.0]]
    np.testing.assert_array_equal(prep.field_source("value")(10, 11, 28, 31), np.float32([[0.1, 0.1, 0.9]]))


def test_renders_beyond_the_unit_range_come_back_inside_the_map():
    """The batch paths' rule: a render above 1 or below 0 (an overshooting model) is clipped to
    the map's [lo, hi] before it becomes data (robust range of this plane: 200 to 1200)."""
    img = np.full(SHAPE, 200, np.uint16)
    img[:, 48:] = 1200
    prep = SourceState(img, (), False, LayerGeometry(SHAPE), (0.0, 65535.0)).prepare()
    assert (prep.maps["value"].lo, prep.maps["value"].hi) == (200, 1200)
    u = np.array([[-0.2, 0.0, 0.1, 1.0, 1.25]], np.float32)
    assert prep.combine([np.repeat(u[..., None], 3, -1)]).tolist() == [[200.0, 200.0, 300.0, 1200.0, 1200.0]]
    near = np.array([[65535, 200, 300, 1200, 50]], np.uint16)  # the raw data under each sample
    got = prep.combine([np.repeat(u[..., None], 3, -1)], near)
    assert got.tolist() == [[65535.0, 200.0, 300.0, 1200.0, 50.0]]  # what the map cannot hold, as it is
