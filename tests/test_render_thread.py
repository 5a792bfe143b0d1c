"""The live-zoom render thread without Qt: the order of its work (centre tile, then previews,
then full tiles), what a preview holds, and that newer requests interrupt encoding."""

from __future__ import annotations

import numpy as np
import pytest

from napari_liif._qt.render_thread import FieldSpec, Job, RenderThread, Request, preview_frame

pytestmark = pytest.mark.usefixtures("single_thread")

IMAGE = np.random.default_rng(4).random((30, 40)).astype(np.float32)


def _spec():
    return FieldSpec(("img", 0), lambda: (lambda y0, y1, x0, x1: IMAGE[y0:y1, x0:x1], IMAGE.shape, lambda v: v))


def _jobs():
    # three tiles of a zoom-4 view: 4 samples per input pixel, one of them of odd size
    regions = [((10, 10, 14, 14), (16, 16)), ((10, 14, 14, 18), (16, 16)), ((14, 10, 17.75, 14), (15, 16))]
    return [Job(("tile", k), r, s) for k, (r, s) in enumerate(regions)]


def _run(model, request, preview_min_s=0.0, **kw):
    thread = RenderThread(lambda: model, **kw)
    thread.preview_min_s = preview_min_s  # previews whatever the speed, unless a test says otherwise
    thread.start()
    thread.submit(request)
    messages = []
    while not messages or messages[-1][0] not in ("done", "failed"):
        messages.append(thread.outbox.get(timeout=60))
    thread.stop()
    thread.join(5)
    assert messages[-1][0] == "done", messages[-1]
    return [m for m in messages if m[0] != "note"]  # "loading model"


def test_centre_tile_then_previews_then_full_tiles(make_liif, as_model):
    net, spec = make_liif("edsr-baseline")
    model = as_model(net, spec)
    jobs = _jobs()
    messages = _run(model, Request(1, _spec(), jobs, "on", preview=True))
    order = [(m[0], m[2][1]) for m in messages[:-1]]
    assert order == [("tile", 0), ("preview", 1), ("preview", 2), ("tile", 1), ("tile", 2)]
    fld = model.encode(IMAGE)
    for kind, _, key, values in messages[:-1]:
        job = jobs[key[1]]
        if kind == "tile":
            want = fld.render(job.region, job.shape)
        else:  # a half-density render, each sample repeated over 2 x 2 tile samples
            region, shape = preview_frame(job)
            want = fld.render(region, shape).repeat(2, 0).repeat(2, 1)[: job.shape[0], : job.shape[1]]
        assert values.shape == job.shape + (3,)
        assert np.abs(values - want).max() < 1e-5
    # without previews: the tiles only, in order
    messages = _run(model, Request(2, _spec(), jobs, "on", preview=False))
    assert [(m[0], m[2][1]) for m in messages[:-1]] == [("tile", 0), ("tile", 1), ("tile", 2)]
    # previews asked for, but the first tile shows the rest would take well under a minute: none
    messages = _run(model, Request(3, _spec(), jobs, "on", preview=True), preview_min_s=60.0)
    assert [(m[0], m[2][1]) for m in messages[:-1]] == [("tile", 0), ("tile", 1), ("tile", 2)]


def test_preview_samples_sit_between_pairs_of_tile_samples():
    job = Job("k", (3.0, 5.0, 6.75, 9.0), (15, 16))  # 0.25 input px per sample; odd row count
    (top, left, bottom, right), (pr, pc) = preview_frame(job)
    assert (pr, pc) == (8, 8)
    fine = top + (np.arange(15) + 0.5) * 0.25  # centres of the tile's sample rows
    coarse = top + (np.arange(pr) + 0.5) * (bottom - top) / pr
    pairs = np.r_[fine, fine[-1] + 0.25].reshape(-1, 2).mean(1)  # one sample past the odd end
    assert np.allclose(coarse, pairs, atol=1e-12)
    assert np.isclose((right - left) / pc, 0.5)


def test_encoding_windows_stop_when_a_newer_request_arrives(make_liif, as_model):
    net, spec = make_liif("edsr-baseline")
    fld = as_model(net, spec).encode(IMAGE, tile=8, window_px=22 * 22)  # one tile per window
    asked = []

    def stop_after_two():
        asked.append(1)
        return len(asked) > 2

    assert fld.prefetch(should_stop=stop_after_two) == 2  # two windows, then the stop
    assert fld.prefetch() == 4 * 5 - 2  # the rest, nothing twice
