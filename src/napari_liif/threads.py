"""Threads for rendering, chosen rather than left to OpenMP's defaults.

The policy (measured in docs/performance.md, "Threads on a busy machine"): a render's output
blocks are decoded by a few *worker threads*, each with **one** intra-op thread, instead of
one thread whose every small operation is split over all cores. When another process takes a
core, an OpenMP team of two waits at every operation's barrier for the thread that lost its
core (a 2-thread LM-LIIF render slowed 5.4x beside one busy process); independent one-thread
workers just share what is left, as a one-thread render does (which barely slowed).

What is per thread in torch 2.13 (OpenMP build), as tested in ``tests/test_threads.py``:
``torch.set_num_threads(n)`` sets the calling OS thread's OpenMP and MKL thread counts, which
stay with that thread, *and* a process-wide default that every thread takes on its first torch
call that asks for threads (``get_num_threads`` or a parallel operation), overwriting its own
count if it had set one before that first call. :func:`set_thread_intra_op` makes that first
call, sets the calling thread's count and puts the default back, so the workers' single
threads never leak into the threads napari, dask or the caller start later.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

#: most block workers a render uses (beyond this, per-block Python under the GIL dominates)
MAX_WORKERS = 8

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()
_SET_LOCK = threading.Lock()  # one probe-set-restore at a time, or two could leave the default moved


def cpu_cores() -> int:
    """Cores this process may run on (its affinity where the OS tells, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def new_thread_default() -> int:
    """The intra-op thread count a thread starting now would get (torch's process default)."""
    got = []
    t = threading.Thread(target=lambda: got.append(torch.get_num_threads()), name="napari-liif-probe")
    t.start()
    t.join()
    return got[0]


def set_thread_intra_op(n: int) -> None:
    """Give the calling thread ``n`` intra-op threads, leaving the count that other threads
    start with as it was (torch's ``set_num_threads`` also moves that default)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"intra-op threads must be at least 1, got {n}")
    with _SET_LOCK:
        default = new_thread_default()
        torch.get_num_threads()  # this thread's lazy first-use setup, which would read the default later
        torch.set_num_threads(n)
        if default != n:  # put the default back from a thread of its own (whose count dies with it)
            t = threading.Thread(target=torch.set_num_threads, args=(default,), name="napari-liif-restore")
            t.start()
            t.join()


def render_workers(device: torch.device) -> int:
    """Block workers for a render on ``device`` called from this thread: on a CPU as many as
    this thread's intra-op threads (so ``torch.set_num_threads(1)`` still means one core),
    at most the cores and :data:`MAX_WORKERS`; elsewhere 1 (a GPU queues the work itself)."""
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), cpu_cores(), MAX_WORKERS))


def render_pool(workers: int) -> ThreadPoolExecutor:
    """A shared pool of ``workers`` threads, each with one intra-op thread, created once."""
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix=f"napari-liif-render{workers}",
                                                        initializer=set_thread_intra_op, initargs=(1,))
        return pool
