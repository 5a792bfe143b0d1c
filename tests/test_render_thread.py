"""The live core's renderer without Qt: the order of its work (centre tile, then previews,
then full tiles), what a preview holds, and that newer requests interrupt encoding."""

from __future__ import annotations

import numpy as np
import pytest

from napari_liif.live.keys import Done, Failed, Job, Note, PlaneSpec, Request, TileKey
from napari_liif.live.port import ModelEngine
from napari_liif.live.renderer import Renderer

pytestmark = pytest.mark.usefixtures("single_thread")

IMAGE = np.random.default_rng(4).random((30, 40)).astype(np.float32)


class _Plane:
    """What :class:`~napari_liif.live.prepared.Prepared` gives the renderer, for IMAGE as it is."""

    def __init__(self, image=IMAGE):
        self.fields = [("value", lambda y0, y1, x0, x1: image[y0:y1, x0:x1])]
        self.shape = image.shape
        self.carries = False

    def combine(self, renders, near=None):
        return renders[0]


def _spec(source=0, image=IMAGE):
    return {source: PlaneSpec(("img", 0), lambda: _Plane(image))}


def _key(source, k):
    """Tile ``k`` of ``source``, on no lattice (rendered on its own)."""
    return TileKey(source, ("img", 0), "on", None, k, k + 1, 0, 1)


def _jobs(source=0):
    # three tiles of a zoom-4 view: 4 samples per input pixel, one of them of odd size
    regions = [((10, 10, 14, 14), (16, 16)), ((10, 14, 14, 18), (16, 16)), ((14, 10, 17.75, 14), (15, 16))]
    return [Job(_key(source, k), r, s) for k, (r, s) in enumerate(regions)]


def _run(model, request, preview_min_s=0.0, **kw):
    thread = Renderer(lambda: model, **kw)
    thread.preview_min_s = preview_min_s  # previews whatever the speed, unless a test says otherwise
    thread.start()
    thread.submit(request)
    messages = []
    while not messages or not isinstance(messages[-1], (Done, Failed)):
        messages.append(thread.outbox.get(timeout=60))
    thread.stop()
    thread.join(5)
    assert isinstance(messages[-1], Done), messages[-1]
    return [(m.kind.value, m.gen, m.key, m.values) for m in messages[:-1] if not isinstance(m, Note)] + [("done",)]


def test_centre_tile_then_previews_then_full_tiles(make_liif, as_model):
    net, spec = make_liif("edsr-baseline")
    model = as_model(net, spec)
    jobs = _jobs()
    messages = _run(model, Request(1, _spec(), jobs, "on", preview=True))
    order = [(m[0], m[2].r0) for m in messages[:-1]]
    assert order == [("tile", 0), ("preview", 1), ("preview", 2), ("tile", 1), ("tile", 2)]
    fld = model.encode(IMAGE)
    for kind, _, key, values in messages[:-1]:
        job = jobs[key.r0]
        want = fld.render(job.region, job.shape)  # the tile, rendered whole
        if kind == "preview":  # its (even, even) samples, each repeated over 2 x 2
            want = want[0::2, 0::2].repeat(2, 0).repeat(2, 1)[: job.shape[0], : job.shape[1]]
        assert values.shape == job.shape + (3,)
        assert np.abs(values - want).max() < 1e-5
        assert np.abs(values - want).max() < 1e-2 * np.abs(np.diff(want, axis=0)).max()  # not trivially
    # without previews: the tiles only, in order
    messages = _run(model, Request(2, _spec(), jobs, "on", preview=False))
    assert [(m[0], m[2].r0) for m in messages[:-1]] == [("tile", 0), ("tile", 1), ("tile", 2)]
    # previews asked for, but the first batch (tile 1: tile 2 is of another height) shows the rest
    # would take well under a minute: none
    messages = _run(model, Request(3, _spec(), jobs, "on", preview=True), preview_min_s=60.0)
    assert [(m[0], m[2].r0) for m in messages[:-1]] == [("tile", 0), ("tile", 1), ("tile", 2)]
    # the rest would take longer than allowed: the first batch whole (it was timed), the others coarse first
    messages = _run(model, Request(4, _spec(), jobs, "on", preview=True), preview_min_s=1e-9)
    assert [(m[0], m[2].r0) for m in messages[:-1]] == [("tile", 0), ("tile", 1), ("preview", 2), ("tile", 2)]


@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("cell", ["on", "off", "clamp"])
def test_preview_and_completion_samples_are_the_tiles_own(make_liif, as_model, cell, bilinear):
    """The render thread's sub-grids (the tile's grid sliced: ``[::2, ::2]`` for the preview,
    ``[1::2, :]`` and ``[::2, 1::2]`` to complete it) give exactly the tile's samples, bit for
    bit: the same coordinates and the same cell, with no cell arithmetic of their own."""
    net, spec = make_liif("edsr-baseline", bilinear_residual=bilinear)
    fld = as_model(net, spec).encode(IMAGE)
    region, shape = (3.0, 5.0, 6.75, 9.0), (15, 16)  # 0.25 input px per sample; odd row count
    whole = fld.render(region, shape, cell=cell)
    field = ModelEngine(fld.model).field(fld.source, fld.shape, tile=fld.tile, cache_bytes=fld.cache_bytes,
                                         window_px=fld.window_px)
    for r0, c0, step in ((0, 0, 2), (1, 0, (2, 1)), (0, 1, (2, 2)), (0, 0, 1)):
        sr, sc = (step, step) if isinstance(step, int) else step
        got = field.render(region, shape, cell, slice(r0, None, sr), slice(c0, None, sc))
        assert np.array_equal(got, whole[r0::sr, c0::sc])
    # a grid of its own over the same span with half the samples has a bigger cell: other
    # values (except with cell "off", which ignores the sample spacing)
    sparse = fld.render((2.875, 5.0, 2.875 + 8 * 0.5, 9.0), (8, 16), cell=cell)
    assert np.allclose(sparse, whole[0::2], atol=1e-6) == (cell == "off")


def test_several_sources_share_one_queue_centre_tiles_first(make_liif, as_model):
    """Two sources (two channels): the centre tile of each before any other tile, then each
    source's previews and tiles, every value that source's own."""
    net, spec = make_liif("edsr-baseline")
    model = as_model(net, spec)
    other = np.ascontiguousarray(IMAGE[::-1])
    fields = {**_spec(0), **_spec(1, other)}
    a, b = _jobs(0), _jobs(1)
    jobs = [a[0], b[0], a[1], b[1], a[2], b[2]]
    messages = _run(model, Request(1, fields, jobs, "on", preview=True))
    order = [(m[0], m[2]) for m in messages[:-1]]
    order = [(kind, (key.source, key.r0)) for kind, key in order]
    assert order[:2] == [("tile", (0, 0)), ("tile", (1, 0))]
    assert sorted(order[2:]) == sorted([(k, (s, i)) for k in ("preview", "tile") for s in (0, 1) for i in (1, 2)])
    encoded = {0: model.encode(IMAGE), 1: model.encode(other)}
    for kind, _, key, values in messages[:-1]:
        if kind == "tile":
            job = dict(zip([j.key for j in jobs], jobs))[key]
            assert np.abs(values - encoded[key.source].render(job.region, job.shape)).max() < 1e-5


def test_encoding_windows_stop_when_a_newer_request_arrives(make_liif, as_model):
    net, spec = make_liif("edsr-baseline")
    fld = as_model(net, spec).encode(IMAGE, tile=8, window_px=22 * 22)  # one tile per window
    asked = []

    def stop_after_two():
        asked.append(1)
        return len(asked) > 2

    assert fld.prefetch(should_stop=stop_after_two) == 2  # two windows, then the stop
    assert fld.prefetch() == 4 * 5 - 2  # the rest, nothing twice


def test_block_and_screen_tile_follow_the_device(make_liif, as_model, monkeypatch):
    """CPU: 64-sample output blocks and 128-pixel screen tiles; a GPU gets larger ones."""
    import torch

    import napari_liif.device as dev
    from napari_liif.live.session import default_tile

    net, spec = make_liif("edsr-baseline")
    model = as_model(net, spec)
    assert model.encode(IMAGE).block == 64
    assert default_tile("cpu") == 128
    monkeypatch.setattr(dev, "resolve_device", lambda d: torch.device("cuda"))  # no GPU needed
    assert default_tile("cuda") == 512
    model.device = torch.device("cuda")  # nothing is encoded: only the block choice reads it
    assert model.encode(IMAGE).block == 256
