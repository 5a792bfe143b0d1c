"""Run ``napari-liif`` so that it stops itself (SIGSTOP) at a chosen point, for
tests/test_concurrency.py: the test then lets it go on (SIGCONT), interrupts it or kills it,
at exactly that point, with no timing guesses.

usage: python concurrency_driver.py POINT ARGS...

POINT: ``none``; ``temp`` (its temporary output was just created and owned); ``commit`` (the
result is complete, just before the rename into place); ``aside`` (a store swap moved the old
store aside, the new one not yet in place); ``chunk`` (before the second chunk write of a store).
"""

from __future__ import annotations

import os
import signal
import sys


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


def install(point: str) -> None:
    from napari_liif import zarr_io
    from napari_liif.outputs import atomic

    if point == "temp":
        _after(atomic, "create_owned")
    elif point == "commit":
        _before(atomic, "_commit_store")
        _before(atomic, "_commit_file")
    elif point == "aside":
        _after(atomic, "lock_owned")
    elif point == "chunk":
        orig, calls = zarr_io._Guarded.__setitem__, []

        def setitem(self, key, value):
            calls.append(1)
            if len(calls) == 2:
                _stop()
            orig(self, key, value)

        zarr_io._Guarded.__setitem__ = setitem
    elif point != "none":
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    install(sys.argv[1])
    from napari_liif.cli import main

    sys.exit(main(sys.argv[2:]))
