"""Run ``napari-liif`` so that it stops itself (SIGSTOP) at a chosen point, for
tests/test_concurrency.py: the test then lets it go on (SIGCONT), interrupts it or kills it,
at exactly that point, with no timing guesses.

usage: python concurrency_driver.py POINT ARGS...

POINT: ``none``; ``temp`` (its temporary output was just created and owned); ``commit`` (the
result is complete, just before the rename into place); ``aside`` (a store swap moved the old
store aside, the new one not yet in place); ``chunk`` (before the second chunk write of a store); ``chunk=SIGNAME`` (at that same write, the dask worker thread doing it sends SIGNAME to
itself, not to the process: the signal lands in that thread while the main thread waits inside
dask's compute, whatever thread the kernel would have chosen).

The run starts as an interactive one does: SIGINT, SIGTERM and SIGHUP at their defaults, whatever
the test runner inherited (a background job of a non-interactive shell starts with SIGINT
ignored, ``nohup`` with SIGHUP ignored, and napari-liif keeps an ignored signal ignored). With the
environment variable ``DRIVER_IGNORE=SIGNAME`` that signal is ignored instead, as under ``nohup``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _stop() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def _after(module, name: str) -> None:
    orig = getattr(module, name)

    def wrapped(*a, **k):
        out = orig(*a, **k)
        _stop()
        return out

    setattr(module, name, wrapped)


def _before(module, name: str) -> None:
    orig = getattr(module, name)

    def wrapped(*a, **k):
        _stop()
        return orig(*a, **k)

    setattr(module, name, wrapped)


def _stop_at_second_write(act) -> None:
    from napari_liif import zarr_io

    orig, calls = zarr_io._Guarded.__setitem__, []

    def setitem(self, key, value):
        calls.append(1)
        if len(calls) == 2:
            act()
        orig(self, key, value)

    zarr_io._Guarded.__setitem__ = setitem


def _signal_this_thread(name: str):
    sig = getattr(signal, name)
    return lambda: signal.pthread_kill(threading.get_ident(), sig)


def dispositions(ignore: str | None) -> None:
    """Defaults for the signals napari-liif handles (module docstring); ``ignore`` ignored."""
    for name, default in (("SIGINT", signal.default_int_handler), ("SIGTERM", signal.SIG_DFL),
                          ("SIGHUP", signal.SIG_DFL)):
        signal.signal(getattr(signal, name), signal.SIG_IGN if name == ignore else default)


def install(point: str) -> None:
    from napari_liif.outputs import atomic

    if point == "temp":
        _after(atomic, "create_owned")
    elif point == "commit":
        _before(atomic, "_commit_store")
        _before(atomic, "_commit_file")
    elif point == "aside":
        _after(atomic, "lock_owned")
    elif point == "chunk":
        _stop_at_second_write(_stop)
    elif point.startswith("chunk="):
        _stop_at_second_write(_signal_this_thread(point.split("=", 1)[1]))
    elif point != "none":
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    dispositions(os.environ.get("DRIVER_IGNORE"))
    install(sys.argv[1])
    from napari_liif.cli import main

    sys.exit(main(sys.argv[2:]))
