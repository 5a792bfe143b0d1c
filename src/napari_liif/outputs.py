"""Where napari-liif may write, and how: the one place that decides whether a destination is safe.

Rules (every writer follows them: files and folders, ``--dask`` zarr stores, the batch widget,
``napari-liif sample``, training run folders):

* **Inputs are untouchable.** A destination that is an input, resolves to one (symlinks, ``..``),
  is another name for one (a hard link: same ``(st_dev, st_ino)``), holds one (a folder or store
  with an input inside, at any depth) or lies inside an input store is refused, even with
  ``overwrite``.
* **Only our own outputs are replaced or skipped.** A file we wrote is recorded in the hidden log
  ``.napari-liif-outputs`` of its folder (name, size, modification time, SHA-256, and ``made``:
  what made it, :mod:`napari_liif.provenance`); a zarr store we wrote carries the attribute
  ``napari_liif`` (``complete``, ``made``) and holds nothing but zarr files. An output of ours
  is skipped only when its ``made`` equals the run's (same input bytes, same parameters), else
  recomputed. An existing destination that is neither is refused unless ``overwrite``; a folder
  that holds anything other than a zarr store is refused even then (``overwrite`` replaces
  files and zarr stores, never other folders).
* **Atomic, owned writes.** A file is written under a hidden temporary name in its own folder and
  renamed into place (``os.replace``); a store is written as a hidden temporary store and swapped
  in once complete. Each temporary is owned (locked) by its writer (:mod:`napari_liif.owners`)
  and removed only by it, or by a later run once the owner is gone. The rename is the only
  commit and replaces only what the run checked (:class:`Claim`): a run that lost a race to
  another keeps the other's result (``identical``, or an :class:`OutputError`). An interrupted
  run leaves nothing under a final name, and replacing never writes into the old file (another
  hard link to it keeps its bytes). A full disk is a :class:`DiskFullError`.

Every refusal is an :class:`OutputError` whose one-line message starts with the path.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from .owners import Owned, create_owned, folder_lock, lock_owned, signals_held, take_if_abandoned
from .provenance import content_digest, normalize

LOG_NAME = ".napari-liif-outputs"  # per folder: one JSON line per file we wrote
_LOG_HEADER = {"napari_liif_outputs": 1}
ZARR_KEY = "napari_liif"  # attribute of every store we write: {"complete": bool}
RUN_MARKER = ".napari-liif-run"  # in every training run folder we create
_ZARR_FILES = re.compile(r"^(\.zarray|\.zattrs|\.zgroup|\.zmetadata|zarr\.json|\d+([./]\d+)*)$")
_ZARR_DIRS = re.compile(r"^(\d+|c)$")


class OutputError(ValueError):
    """A destination napari-liif refuses to write (one line, starting with the path)."""


# -- inputs ------------------------------------------------------------------------------------
def _resolve(p: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(p)))


def _file_id(p: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(p)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Inputs:
    """The inputs of a run, as resolved paths and file identities, to test destinations against."""

    def __init__(self, paths: Iterable[str | Path] = ()):
        self.given: dict[Path, Path] = {}  # resolved -> as given
        self.holders: dict[Path, Path] = {}  # every folder above an input -> that input
        self.stores: dict[Path, Path] = {}  # inputs that are folders (zarr stores)
        self.ids: dict[tuple[int, int], Path] = {}
        for p in paths:
            p = Path(p)
            r = _resolve(p)
            self.given.setdefault(r, p)
            for parent in r.parents:
                self.holders.setdefault(parent, p)
            if os.path.isdir(r):
                self.stores.setdefault(r, p)
            fid = _file_id(p)
            if fid is not None:
                self.ids.setdefault(fid, p)

    def conflict(self, dst: str | Path) -> str | None:
        """Why writing ``dst`` would touch an input, or None."""
        dst = Path(dst)
        r = _resolve(dst)
        if r in self.given:
            given = self.given[r]
            return "is an input" if str(given) == str(dst) else f"is the input {given}"
        if r in self.holders:
            return f"holds the input {self.holders[r]}"
        for parent in r.parents:
            if parent in self.stores:
                return f"is inside the input {self.stores[parent]}"
        fid = _file_id(dst)
        if fid is not None and fid in self.ids:
            return f"is another name (a hard link) for the input {self.ids[fid]}"
        if os.path.isdir(dst) and self.ids:
            for root, _, files in os.walk(dst):
                for f in files:
                    fid = _file_id(Path(root) / f)
                    if fid in self.ids:
                        return f"holds {Path(root) / f}, another name (a hard link) for the input {self.ids[fid]}"
        return None


def refuse_inputs(dst: str | Path, inputs: Inputs | None) -> None:
    """Raise :class:`OutputError` if ``dst`` touches an input."""
    why = inputs.conflict(dst) if inputs is not None else None
    if why:
        detail = "" if why == "is an input" else f" (it {why})"
        raise OutputError(f"{dst}: output would overwrite an input{detail}; choose another -o folder or --suffix")


# -- our own files: the per-folder log -----------------------------------------------------------
def _log_path(folder: Path) -> Path:
    return folder / LOG_NAME


_LOGS: dict[Path, tuple[tuple, dict | None]] = {}  # parsed logs by folder, with the stat they were read at


def _read_log(folder: Path) -> dict[str, list[dict]] | None:
    """{name: [records, oldest first]} from the folder's log; {} when there is none; None when a
    file of that name exists that is not ours (it is then never written). Parsed once per
    version of the log, so planning a folder of many files reads it once."""
    path = _log_path(folder)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    key = (st.st_size, st.st_mtime_ns, st.st_ino)
    cached = _LOGS.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    records = _parse_log(path)
    if len(_LOGS) > 64:
        _LOGS.clear()
    _LOGS[path] = (key, records)
    return records


def _parse_log(path: Path) -> dict[str, list[dict]] | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        if json.loads(lines[0]) != _LOG_HEADER:
            return None
    except (IndexError, json.JSONDecodeError):
        return None
    records: dict[str, list[dict]] = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
            records.setdefault(str(rec["name"]), []).append(rec)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line torn by an interrupted append: ignored
    return records


def record_file(path: str | Path, *, made: dict | None = None, source: str | Path | None = None) -> None:
    """Note in the folder's log that napari-liif wrote ``path``: its size, modification time and
    SHA-256, and ``made`` (what made it: :mod:`napari_liif.provenance`). ``source``: the file
    that holds those bytes now and is about to be renamed to ``path`` (the default: ``path``)."""
    path = Path(path)
    log = _log_path(path.parent)
    new = not os.path.lexists(log)
    if not new and not _log_is_ours(log):
        return  # someone else's file under our log's name: left alone (the output counts as theirs)
    src = Path(source) if source is not None else path
    st = os.lstat(src)
    rec = {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": content_digest(src)}
    if made is not None:
        rec["made"] = made
    with open(log, "a", encoding="utf-8") as f:
        if new:
            f.write(json.dumps(_LOG_HEADER) + "\n")
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _log_is_ours(log: Path) -> bool:
    try:
        with open(log, encoding="utf-8") as f:
            return json.loads(f.readline()) == _LOG_HEADER
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def our_record(path: str | Path) -> dict | None:
    """The log record of ``path`` if it is a regular file that napari-liif wrote and nobody
    changed since (same size, time and bytes), else None."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    for rec in reversed((_read_log(path.parent) or {}).get(path.name, [])):
        if rec.get("size") != st.st_size or rec.get("mtime_ns") != st.st_mtime_ns:
            continue
        if "sha256" not in rec or rec["sha256"] == content_digest(path):
            return rec  # records of earlier versions have no digest: size and time decide
    return None


def made_by_us(path: str | Path) -> bool:
    """True if ``path`` is a regular file that napari-liif wrote and nobody changed since."""
    return our_record(path) is not None


# -- zarr stores -----------------------------------------------------------------------------
def foreign_entry(store: str | Path) -> Path | None:
    """The first entry of folder ``store`` that is not part of a zarr store, or None."""
    for root, dirs, files in os.walk(store):
        for d in dirs:
            if not _ZARR_DIRS.match(d) or os.path.islink(os.path.join(root, d)):
                return Path(root) / d
        for f in files:
            if not _ZARR_FILES.match(f):
                return Path(root) / f
    return None


def _zarr_attrs(store: Path) -> dict | None:
    """Root attributes of a zarr v2 or v3 store, or None if ``store`` holds no zarr metadata."""
    if (store / ".zattrs").is_file() or (store / ".zarray").is_file() or (store / ".zgroup").is_file():
        try:
            return json.loads((store / ".zattrs").read_text()) if (store / ".zattrs").is_file() else {}
        except (OSError, ValueError):
            return {}
    if (store / "zarr.json").is_file():
        try:
            return dict(json.loads((store / "zarr.json").read_text()).get("attributes") or {})
        except (OSError, ValueError, AttributeError):
            return {}
    return None


def store_mark(store: str | Path) -> dict:
    """Our attribute of a store (``{"complete": bool, "made": {...}}``), or {}."""
    mark = (_zarr_attrs(Path(store)) or {}).get(ZARR_KEY)
    return mark if isinstance(mark, dict) else {}


def store_state(store: str | Path) -> str:
    """``absent``, ``empty`` (an empty folder), ``ours`` (a complete store we wrote), ``ours-partial``,
    ``foreign-store`` (a zarr store, not ours), ``folder`` (holds other things) or ``file``."""
    store = Path(store)
    if not os.path.lexists(store):
        return "absent"
    if not store.is_dir():
        return "file"
    if not any(store.iterdir()):
        return "empty"
    attrs = _zarr_attrs(store)
    if attrs is None or foreign_entry(store) is not None:
        return "folder"
    mark = attrs.get(ZARR_KEY)
    if isinstance(mark, dict):
        return "ours" if mark.get("complete") is True else "ours-partial"
    return "foreign-store"


# -- the decision ------------------------------------------------------------------------------
def _same(recorded, made) -> bool:
    """Whether a recorded ``made`` equals the one a run would write (``made``: a dict or a
    callable giving one, called only here); never for a record without one."""
    if recorded is None or made is None:
        return False
    return normalize(recorded) == normalize(made() if callable(made) else made)


def check_file(dst: str | Path, inputs: Inputs | None = None, *, overwrite: bool = False, made=None) -> str:
    """Whether the file ``dst`` may be written: ``"write"``, ``"skip"`` (an output of ours made
    from the same input and parameters: ``made``, a dict or a callable giving one) or an
    :class:`OutputError`. An output of ours made otherwise is ``"write"``: recomputed."""
    dst = Path(dst)
    refuse_inputs(dst, inputs)
    if not os.path.lexists(dst):
        return "write"
    if dst.is_dir():
        raise OutputError(f"{dst}: is a folder; the output here is a file: choose another -o")
    if not dst.is_symlink() and not dst.is_file():
        raise OutputError(f"{dst}: is not a regular file (a device, pipe or socket); napari-liif never replaces "
                          "it, even with --overwrite: choose another -o")
    rec = our_record(dst)
    if rec is not None:
        return "skip" if not overwrite and _same(rec.get("made"), made) else "write"
    if overwrite:
        return "write"
    raise OutputError(f"{dst}: exists and was not written by napari-liif (or was changed since); "
                      "pass --overwrite to replace it, or choose another -o")


def check_store(dst: str | Path, inputs: Inputs | None = None, *, overwrite: bool = False, made=None) -> str:
    """Whether the zarr store ``dst`` may be written: ``"write"``, ``"skip"`` (a complete store of
    ours made from the same input and parameters, ``made``) or an :class:`OutputError`."""
    dst = Path(dst)
    refuse_inputs(dst, inputs)
    state = store_state(dst)
    if state in ("absent", "empty", "ours-partial"):
        return "write"
    if state == "ours":
        return "skip" if not overwrite and _same(store_mark(dst).get("made"), made) else "write"
    if state == "folder":
        what = foreign_entry(dst) if _zarr_attrs(dst) is not None else None
        detail = f"holds {what.relative_to(dst)}, which is not part of a zarr store" if what else \
            "is a folder, not a zarr store"
        raise OutputError(f"{dst}: {detail}; napari-liif never replaces such a folder, even with --overwrite: "
                          "choose another -o")
    if overwrite:
        return "write"
    kind = "a zarr store not written by napari-liif" if state == "foreign-store" else "a file"
    raise OutputError(f"{dst}: exists and is {kind}; pass --overwrite to replace it, or choose another -o")


def check_folder_writable(folder: str | Path) -> None:
    """Refuse, before any work, a folder that cannot be created or written in."""
    folder = Path(folder)
    probe = folder
    while not os.path.lexists(probe):
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{folder}: cannot create this folder: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):  # O_TMPFILE where available: no name ever appears
            pass
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write in {probe} ({exc.strerror or type(exc).__name__})") from None


# -- writing -----------------------------------------------------------------------------------
_UNSEEN = object()


class DiskFullError(OSError):
    """The disk (or quota) filled up while writing an output; nothing was left under its name."""

    def __init__(self, dst: Path):
        self.message = f"no space left on device writing {dst}: free space or choose another -o"
        super().__init__(errno.ENOSPC, self.message)

    def __str__(self) -> str:
        return self.message


_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` (or what caused it) says the device is full: ENOSPC, EDQUOT, or a short
    write (numpy's "N requested and M written") with less than N bytes free."""
    seen = 0
    while exc is not None and seen < 8 and not isinstance(exc, DiskFullError):
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        m = _SHORT_WRITE.search(str(exc))
        if m:
            with contextlib.suppress(OSError, AttributeError):
                st = os.statvfs(folder)
                return st.f_bavail * st.f_frsize < int(m[1])
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


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


def _temp_name(dst: Path, kind: str) -> Path:
    """``.NAME.KIND-TOKEN.SUFFIX``: the token's second half checks its first (a file a user named
    so by chance is never taken for one of ours)."""
    head = secrets.token_hex(4)
    return dst.with_name(f".{dst.name}.{kind}-{head}{_check(head, dst.name)}{dst.suffix}")


def _check(head: str, name: str) -> str:
    return hashlib.sha256(f"{head}/{name}".encode()).hexdigest()[:8]


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<head>[0-9a-f]{8})(?P<check>[0-9a-f]{8})?(?P<suf>.*)$")


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


def _own_temp(dst: Path, make) -> Owned:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        return create_owned(lambda: _temp_name(dst, "partial"), make)
    except OSError as exc:
        if _disk_full(exc, dst.parent):
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
        full = _disk_full(exc, dst.parent)
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
            same = rec is not None and _same(rec.get("made"), claim.made)
            _lost_race(dst, tmp, claim, rec is not None, same and filecmp.cmp(tmp, dst, shallow=False))
            return
        if record:
            record_file(dst, made=claim.made, source=tmp)  # first: a failed record leaves nothing committed
        os.replace(tmp, dst)
    claim.outcome = "written"


def _lost_race(dst: Path, tmp: Path, claim: Claim, ours: bool, identical: bool) -> None:
    """Another run committed ``dst`` while this one worked: keep its result, drop ours."""
    _remove_store(tmp)
    if identical:
        claim.outcome = "identical"
        return
    if not ours:
        raise OutputError(f"{dst}: appeared while this run worked and was not written by napari-liif; "
                          "left it as it is: choose another -o")
    raise OutputError(f"{dst}: another napari-liif run wrote it while this one worked, "
                      f"{'with other values' if _same_made(dst, claim) else 'from another input or parameters'}; "
                      "kept that result: run again to redo this one")


def _same_made(dst: Path, claim: Claim) -> bool:
    rec = store_mark(dst) if dst.is_dir() else (our_record(dst) or {})
    return _same(rec.get("made"), claim.made)


def _remove_store(path: Path) -> None:
    """Remove a store or file of ours (or a link to one: the link only)."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_store(dst: str | Path, claim: Claim | None = None) -> Iterator[Path]:
    """Yield a temporary store folder beside ``dst``, owned (locked) by this process; when the
    block ends normally it replaces ``dst`` (moved aside first, removed after the swap) if
    ``dst`` is still as ``claim`` saw it, else the race rules apply (:class:`Claim`); on any
    failure it is removed. The caller checks ``dst`` first (:func:`check_store`)."""
    dst = Path(dst)
    claim = claim or Claim()
    owned = None
    try:
        with signals_held():  # as in atomic_file
            owned = _own_temp(dst, os.mkdir)
        yield owned.path
        _commit_store(dst, owned.path, claim)
    except BaseException as exc:
        full = _disk_full(exc, dst.parent)
        if owned is not None and os.path.lexists(owned.path):
            _remove_store(owned.path)
        if full:
            raise DiskFullError(dst) from None
        raise
    finally:
        if owned is not None:
            owned.release()


def _commit_store(dst: Path, tmp: Path, claim: Claim) -> None:
    if store_state(tmp) != "ours":
        raise OutputError(f"{dst}: the finished temporary store {tmp.name} is not complete; nothing was replaced")
    old = None
    with signals_held(), folder_lock(dst.parent):  # the swap is never cut in two
        if _changed(claim, fingerprint(dst)):
            ours = store_state(dst) == "ours"
            same = ours and _same(store_mark(dst).get("made"), claim.made)
            _lost_race(dst, tmp, claim, ours, same and _same_tree(tmp, dst))
            return
        if os.path.lexists(dst):
            aside = _temp_name(dst, "old")
            os.rename(dst, aside)
            old = lock_owned(aside)
        try:
            os.rename(tmp, dst)
        except BaseException:
            if old is not None:
                os.rename(old.path, dst)
            raise
    claim.outcome = "written"
    if old is not None:
        try:
            _remove_store(old.path)
        finally:
            old.release()


def _same_tree(a: Path, b: Path) -> bool:
    """Whether two folders hold the same files with the same bytes."""
    def files(root: Path) -> list[str]:
        return sorted(str(Path(r, f).relative_to(root)) for r, _, fs in os.walk(root) for f in fs)
    names = files(a)
    return names == files(b) and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def remove_stale_partials(dst: str | Path) -> list[Path]:
    """Remove the temporaries of ``dst`` whose owner is gone (:mod:`napari_liif.owners`)."""
    dst = Path(dst)
    return remove_stale_in(dst.parent, [dst.name])


def remove_stale_in(folder: str | Path, names) -> list[Path]:
    """Remove the temporaries of the outputs ``names`` in ``folder`` left by runs that ended
    (killed, crashed): only hidden entries named as :func:`atomic_file` and :func:`atomic_store`
    name them whose owner's lock is free; files only with a valid name check, stores only when
    they hold nothing but a store of ours. A temporary of a live run is never touched."""
    folder, names = Path(folder), set(names)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    with folder_lock(folder):
        for p in folder.iterdir():
            m = _TEMP.match(p.name)
            if not m or m["name"] not in names or m["suf"] != Path(m["name"]).suffix or p.is_symlink():
                continue
            if p.is_dir():
                if store_state(p) not in ("ours-partial", "ours", "empty"):
                    continue
            elif not (p.is_file() and m["check"] == _check(m["head"], m["name"])):
                continue
            owned = take_if_abandoned(p)
            if owned is not None:
                try:
                    _remove_store(p)
                    removed.append(p)
                finally:
                    owned.release()
    return removed


# -- training run folders ------------------------------------------------------------------------
def check_run_folder(folder: str | Path, *, resume: bool = False) -> bool:
    """Whether a training run may use ``folder``; True if it is a run folder of ours.

    A new or empty folder is fine; a folder of ours is used again only to resume it (``resume``);
    any other non-empty folder is refused: a run never writes its checkpoints and logs among files
    it did not make.
    """
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{folder}: is a file; the run folder must be a folder: choose another --out-dir")
    ours = (folder / RUN_MARKER).is_file()
    if folder.is_dir() and any(folder.iterdir()):
        if not ours:
            raise OutputError(f"{folder}: is not empty and is not a napari-liif run folder; "
                              "choose a new or empty --out-dir")
        if not resume:
            raise OutputError(f"{folder}: already holds a napari-liif run; pass --resume to continue it, "
                              "or choose a new --out-dir")
    check_folder_writable(folder)
    return ours


def claim_run_folder(folder: str | Path, *, resume: bool = False) -> Path:
    """Create (or take back, to resume) a training run folder, as :func:`check_run_folder` allows,
    and mark it as ours."""
    folder = Path(folder)
    ours = check_run_folder(folder, resume=resume)
    folder.mkdir(parents=True, exist_ok=True)
    if not ours:
        (folder / RUN_MARKER).write_text("a napari-liif training run folder\n")
    return folder
