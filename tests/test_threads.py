"""The render's thread policy, checked by counting (which thread ran what, with how many
intra-op threads), never by timing."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from lmliif_helpers import build_lmliif, lmliif_spec
from napari_liif import threads
from napari_liif.engine import LiifModel


def in_new_thread(fn):
    got = []
    t = threading.Thread(target=lambda: got.append(fn()))
    t.start()
    t.join()
    return got[0]


@pytest.fixture
def restore_threads():
    before, default = torch.get_num_threads(), threads.new_thread_default()
    yield before, default
    torch.set_num_threads(default)  # the process default first, then this thread's own count
    threads.set_thread_intra_op(before)


def test_set_thread_intra_op_changes_only_the_calling_thread(restore_threads, monkeypatch):
    before, default = restore_threads
    torch.set_num_threads(2)
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads",
                        lambda n: (calls.append((threading.current_thread().name, n)), real(n))[1])

    def worker():
        threads.set_thread_intra_op(1)
        return torch.get_num_threads()

    assert in_new_thread(worker) == 1  # the worker's own count
    assert torch.get_num_threads() == 2  # the caller's is untouched
    assert in_new_thread(torch.get_num_threads) == 2  # and threads started later get the default back
    # one call set the worker's count, one from a short-lived thread put the default back
    assert [n for _, n in calls] == [1, 2] and calls[1][0] == "napari-liif-restore"
    with pytest.raises(ValueError, match="at least 1, got 0"):
        threads.set_thread_intra_op(0)


def test_render_workers_follow_the_callers_threads(restore_threads):
    cpu = torch.device("cpu")
    torch.set_num_threads(1)
    assert threads.render_workers(cpu) == 1
    torch.set_num_threads(2)
    assert threads.render_workers(cpu) == min(2, threads.cpu_cores())
    assert threads.render_workers(torch.device("cuda")) == 1  # no CUDA needed to name one


def small_field(image, workers):
    spec = lmliif_spec()
    model = LiifModel(build_lmliif(spec, seed=3), spec, device="cpu", precision="fp32")
    field = model.encode(image, tile=8)
    field.block, field.workers = 16, workers
    return model, field


def test_parallel_render_runs_blocks_on_one_thread_workers_and_equals_serial(restore_threads):
    """workers=2: every block is decoded on a pool thread with one intra-op thread, the
    caller keeps its own count, and the result equals the serial render bit for bit."""
    torch.set_num_threads(2)
    image = np.random.default_rng(0).random((20, 24, 3)).astype(np.float32)
    model, field = small_field(image, workers=2)
    seen = []
    real = model.family.decode_block

    def decode_block(products, block, state):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return real(products, block, state)

    model.family.decode_block = decode_block
    got = field.render(None, (60, 70))
    blocks = 4 * 5  # 60 x 70 in 16 x 16 blocks
    assert len(seen) == blocks
    assert all(name.startswith("napari-liif-render2") and n == 1 for name, n in seen)
    assert torch.get_num_threads() == 2
    serial = small_field(image, workers=1)[1].render(None, (60, 70))
    assert np.array_equal(got, serial)


def test_parallel_render_stops_and_reports_progress_in_order(restore_threads):
    """After should_stop() turns true no block starts; progress came in order until then."""
    image = np.random.default_rng(1).random((20, 24, 3)).astype(np.float32)
    model, field = small_field(image, workers=2)
    stopped, started_after_stop, progress = [], [], []
    real = model.family.decode_block

    def decode_block(products, block, state):
        started_after_stop.append(bool(stopped))
        return real(products, block, state)

    def should_stop():
        if len(progress) >= 3:
            stopped.append(True)
        return bool(stopped)

    model.family.decode_block = decode_block
    out = np.full((60, 70, 3), -1, np.float32)
    field.render(None, (60, 70), out=out, progress=lambda done, total: progress.append((done, total)),
                 should_stop=should_stop)
    assert progress == [(1, 20), (2, 20), (3, 20)]
    # a worker that had passed its check when the stop came may still start its block
    assert sum(started_after_stop) <= field.workers
    done = len(started_after_stop)  # blocks decoded: those finished or running at the stop
    assert 3 <= done and (done == 20) == (not np.any(out == -1))
