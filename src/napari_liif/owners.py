"""Owners of temporary outputs: operating-system locks that end with their process.

Every temporary output napari-liif writes (a hidden partial file or zarr store beside its
destination) is created and then locked (``flock``) by the process that writes it, for as long as
it exists. The kernel releases the lock when that process ends, however it ends (``kill -9``
included), so "its owner is alive" is exactly "its lock is held": a temporary is only ever removed
by its owner, or by another run that took its lock (the owner is gone). Commits (the rename into
place) and the removal of stale temporaries take a lock on the destination's folder, so that a
run never sees another's half-done swap.

Where the platform or file system has no such locks (no ``fcntl``; some network file systems),
nothing is locked: a temporary whose owner cannot be known is never removed by another run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no owner locks (module docstring)
    fcntl = None


_HELD: dict = {"depth": 0, "pending": None}  # the main thread's held steps, and a signal that came meanwhile


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """A step that must not be cut in two (a temporary created but not yet known to its
    cleanup, a swap half done): a signal whose handler goes through :func:`interrupt` (the
    command line's Ctrl-C, SIGTERM, SIGHUP) takes effect when the step ends. Handlers run in
    the main thread, so only its steps are held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _HELD["depth"] += 1
    try:
        yield
    finally:
        _HELD["depth"] -= 1
        if not _HELD["depth"] and _HELD["pending"] is not None:
            exc, _HELD["pending"] = _HELD["pending"], None
            raise exc


def interrupt(exc: BaseException) -> None:
    """For a signal handler: raise ``exc`` now, or when the held step in progress ends."""
    if _HELD["depth"]:
        _HELD["pending"] = exc
        return
    raise exc


def _try_lock(fd: int) -> bool | None:
    """An exclusive lock on ``fd`` without waiting: True taken, False held by another open
    file (a live owner), None where there are no locks."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None


class Owned:
    """A temporary output and the open, locked descriptor that makes this process its owner."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd

    def release(self) -> None:
        """Give up ownership (closing the descriptor releases the lock)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def _open(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None


def create_owned(name: Callable[[], Path], make: Callable[[Path], None], tries: int = 16) -> Owned:
    """Create a new temporary at ``name()`` with ``make`` (which fails if it exists: O_EXCL,
    mkdir) and lock it. A fresh name that another run locked first (it took the unlocked new
    temporary for a dead owner's) is abandoned to that run, and another name tried."""
    for _ in range(tries):
        path = name()
        try:
            make(path)
        except FileExistsError:
            continue
        fd = _open(path)
        state = None if fd is None else _try_lock(fd)
        if state is False:
            os.close(fd)
            continue
        if state is None and fd is not None:
            os.close(fd)
            fd = None
        return Owned(path, fd)
    raise FileExistsError(f"{name()}: cannot create a temporary output beside it")


def take_if_abandoned(path: Path) -> Owned | None:
    """Become the owner of an existing temporary if its owner is gone (its lock is free), to
    remove it; None while a live process owns it, or where owners cannot be known."""
    fd = _open(path)
    if fd is None:
        return None
    if _try_lock(fd):
        return Owned(path, fd)
    os.close(fd)
    return None


def lock_owned(path: Path) -> Owned:
    """Own ``path`` (a name only this process can know yet, e.g. just renamed to); unlocked
    where there are no locks."""
    fd = _open(path)
    if fd is not None and not _try_lock(fd):
        os.close(fd)
        fd = None
    return Owned(path, fd)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold the exclusive commit lock of ``folder`` (waiting for other runs' short commits).
    Never nest two in one process for the same folder."""
    fd = _open(folder)
    try:
        if fd is not None and fcntl is not None:
            with contextlib.suppress(OSError):  # a file system without locks: commit unlocked
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)
