"""Atomic, owned writes: a file or store is written under a hidden temporary name beside its
destination, owned (locked) by its writer, and renamed into place only if the destination is
still as the run checked it (:class:`Claim`); otherwise the race rules keep the other run's result.
An interrupted write leaves nothing under a final name; a full disk is a :class:`DiskFullError`."""

from __future__ import annotations

import contextlib
import filecmp
import os
from pathlib import Path
from typing import Iterator

from ..owners import Owned, create_owned, folder_lock, lock_owned, signals_held
from ..provenance import normalize
from .checks import same_made
from .errors import DiskFullError, OutputError, is_disk_full
from .filelog import our_record, record_file
from .stores import store_mark, store_state
from .temporaries import remove_path, temp_name

_UNSEEN = object()


class Claim:
    """What a run knows about a destination it is about to write: ``made`` (the record to write
    with it) and ``seen`` (its state when it was checked, :func:`fingerprint`). The commit
    replaces only that state; if another run committed meanwhile, the outcome is
    ``"identical"`` (the same record and bytes: kept, this one dropped) or an
    :class:`OutputError`. ``outcome``: ``"written"`` or ``"identical"`` once committed."""

    def __init__(self, made: dict | None = None):
        self.made = None if made is None else normalize(made)
        self.seen = _UNSEEN
        self.outcome: str | None = None

    def look(self, dst: str | Path) -> Claim:
        """Note the state of ``dst`` now (before it is checked)."""
        self.seen = fingerprint(dst)
        return self


def fingerprint(dst: str | Path) -> tuple | None:
    """The identity and version of what is at ``dst`` (None: nothing): device, inode, size,
    times, and for a store those of its root metadata."""
    def one(p):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
    dst = Path(dst)
    top = one(dst)
    if top is None or not dst.is_dir() or dst.is_symlink():
        return top
    return top + tuple(one(dst / f) for f in (".zattrs", ".zgroup", ".zarray", "zarr.json"))


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


def _own_temp(dst: Path, make) -> Owned:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        return create_owned(lambda: temp_name(dst, "partial"), make)
    except OSError as exc:
        if is_disk_full(exc, dst.parent):
            raise DiskFullError(dst) from None
        raise


@contextlib.contextmanager
def atomic_file(dst: str | Path, *, record: bool | Claim = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dst`` to write, owned (locked) by this process; on
    success it is renamed to ``dst`` and recorded as ours (with ``record.made`` when ``record``
    is a :class:`Claim`, whose ``seen`` state the commit checks); on any failure or interrupt
    removed. A full disk is a :class:`DiskFullError`. The caller checks ``dst`` first."""
    dst = Path(dst)
    claim = record if isinstance(record, Claim) else Claim()
    owned = None
    try:
        with signals_held():  # an interrupt here is taken inside the try, with the temporary known
            owned = _own_temp(dst, _create_file)
        yield owned.path
        _commit_file(dst, owned.path, claim, bool(record))
    except BaseException as exc:
        full = is_disk_full(exc, dst.parent)
        if owned is not None:
            with contextlib.suppress(OSError):
                owned.path.unlink()
        if full:
            raise DiskFullError(dst) from None
        raise
    finally:
        if owned is not None:
            owned.release()


def _changed(claim: Claim, now) -> bool:
    return claim.seen is not _UNSEEN and now is not None and now != claim.seen


def _commit_file(dst: Path, tmp: Path, claim: Claim, record: bool) -> None:
    with signals_held(), folder_lock(dst.parent):
        if _changed(claim, fingerprint(dst)):
            rec = our_record(dst)
            same = rec is not None and same_made(rec.get("made"), claim.made)
            _lost_race(dst, tmp, claim, rec is not None, same and filecmp.cmp(tmp, dst, shallow=False))
            return
        if record:
            record_file(dst, made=claim.made, source=tmp)  # first: a failed record leaves nothing committed
        os.replace(tmp, dst)
    claim.outcome = "written"


def _lost_race(dst: Path, tmp: Path, claim: Claim, ours: bool, identical: bool) -> None:
    """Another run committed ``dst`` while this one worked: keep its result, drop ours."""
    remove_path(tmp)
    if identical:
        claim.outcome = "identical"
        return
    if not ours:
        raise OutputError(f"{dst}: appeared while this run worked and was not written by napari-liif; "
                          "left it as it is: choose another -o")
    raise OutputError(f"{dst}: another napari-liif run wrote it while this one worked, "
                      f"{'with other values' if _made_as_claimed(dst, claim) else 'from another input or parameters'}; "
                      "kept that result: run again to redo this one")


def _made_as_claimed(dst: Path, claim: Claim) -> bool:
    rec = store_mark(dst) if dst.is_dir() else (our_record(dst) or {})
    return same_made(rec.get("made"), claim.made)


@contextlib.contextmanager
def atomic_store(dst: str | Path, claim: Claim | None = None) -> Iterator[Path]:
    """Yield a temporary store folder beside ``dst``, owned (locked) by this process; when the
    block ends normally it replaces ``dst`` (moved aside first, removed after the swap) if
    ``dst`` is still as ``claim`` saw it, else the race rules apply (:class:`Claim`); on any
    failure it is removed. The caller checks ``dst`` first (:func:`napari_liif.outputs.check_store`)."""
    dst = Path(dst)
    claim = claim or Claim()
    owned = None
    try:
        with signals_held():  # as in atomic_file
            owned = _own_temp(dst, os.mkdir)
        yield owned.path
        _commit_store(dst, owned.path, claim)
    except BaseException as exc:
        full = is_disk_full(exc, dst.parent)
        if owned is not None and os.path.lexists(owned.path):
            remove_path(owned.path)
        if full:
            raise DiskFullError(dst) from None
        raise
    finally:
        if owned is not None:
            owned.release()


def _commit_store(dst: Path, tmp: Path, claim: Claim) -> None:
    if store_state(tmp) != "ours":
        raise OutputError(f"{dst}: the finished temporary store {tmp.name} is not complete; nothing was replaced")
    old, swapped = None, False
    try:
        with signals_held(), folder_lock(dst.parent):  # the swap is never cut in two
            if _changed(claim, fingerprint(dst)):
                ours = store_state(dst) == "ours"
                same = ours and same_made(store_mark(dst).get("made"), claim.made)
                _lost_race(dst, tmp, claim, ours, same and _same_tree(tmp, dst))
                return
            if os.path.lexists(dst):
                aside = temp_name(dst, "old")
                os.rename(dst, aside)
                old = lock_owned(aside)
            try:
                os.rename(tmp, dst)
            except BaseException:
                if old is not None:
                    os.rename(old.path, dst)
                raise
            swapped = True
    finally:  # also when a signal that came during the swap is raised as the held step ends
        if swapped:
            claim.outcome = "written"
            if old is not None:
                try:
                    remove_path(old.path)
                finally:
                    old.release()


def _same_tree(a: Path, b: Path) -> bool:
    """Whether two folders hold the same files with the same bytes."""
    def files(root: Path) -> list[str]:
        return sorted(str(Path(r, f).relative_to(root)) for r, _, fs in os.walk(root) for f in fs)
    names = files(a)
    return names == files(b) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)
