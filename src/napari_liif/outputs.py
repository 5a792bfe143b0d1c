"""Where napari-liif may write, and how: the one place that decides whether a destination is safe.

Rules (every writer follows them: files and folders, ``--dask`` zarr stores, the batch widget,
``napari-liif sample``, training run folders):

* **Inputs are untouchable.** A destination that is an input, resolves to one (symlinks, ``..``),
  is another name for one (a hard link: same ``(st_dev, st_ino)``), holds one (a folder or store
  with an input inside, at any depth) or lies inside an input store is refused, even with
  ``overwrite``.
* **Only our own outputs are replaced or skipped.** A file we wrote is recorded in the hidden log
  ``.napari-liif-outputs`` of its folder (name, size, modification time); a zarr store we wrote
  carries the attribute ``napari_liif`` and holds nothing but zarr files. An existing destination
  that is neither is refused unless ``overwrite``; a folder that holds anything other than a zarr
  store is refused even then (``overwrite`` replaces files and zarr stores, never other folders).
* **Atomic writes.** A file is written under a hidden temporary name in its own folder and renamed
  into place (``os.replace``); a store is written as a hidden temporary store and swapped in once
  complete. An interrupted run leaves nothing under a final name, and replacing never writes into
  the old file (another hard link to it keeps its bytes).

Every refusal is an :class:`OutputError` whose one-line message starts with the path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

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


def _read_log(folder: Path) -> dict[str, dict] | None:
    """{name: record} from the folder's log; {} when there is none; None when a file of that name
    exists that is not ours (it is then never written). Parsed once per version of the log, so
    planning a folder of many files reads it once."""
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


def _parse_log(path: Path) -> dict[str, dict] | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        if json.loads(lines[0]) != _LOG_HEADER:
            return None
    except (IndexError, json.JSONDecodeError):
        return None
    records = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
            records[str(rec["name"])] = rec
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line torn by an interrupted append: ignored
    return records


def record_file(path: str | Path) -> None:
    """Note in the folder's log that napari-liif wrote ``path`` (its size and modification time)."""
    path = Path(path)
    log = _log_path(path.parent)
    new = not os.path.lexists(log)
    if not new and not _log_is_ours(log):
        return  # someone else's file under our log's name: left alone (the output counts as theirs)
    st = os.lstat(path)
    with open(log, "a", encoding="utf-8") as f:
        if new:
            f.write(json.dumps(_LOG_HEADER) + "\n")
        f.write(json.dumps({"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}) + "\n")


def _log_is_ours(log: Path) -> bool:
    try:
        with open(log, encoding="utf-8") as f:
            return json.loads(f.readline()) == _LOG_HEADER
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def made_by_us(path: str | Path) -> bool:
    """True if ``path`` is a regular file that napari-liif wrote and nobody changed since."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    rec = (_read_log(path.parent) or {}).get(path.name)
    return (rec is not None and path.is_file() and not path.is_symlink()
            and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns)


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
def check_file(dst: str | Path, inputs: Inputs | None = None, *, overwrite: bool = False) -> str:
    """Whether the file ``dst`` may be written: ``"write"``, ``"skip"`` (an output of ours that
    exists; resumable) or an :class:`OutputError`."""
    dst = Path(dst)
    refuse_inputs(dst, inputs)
    if not os.path.lexists(dst):
        return "write"
    if dst.is_dir():
        raise OutputError(f"{dst}: is a folder; the output here is a file: choose another -o")
    if not dst.is_symlink() and not dst.is_file():
        raise OutputError(f"{dst}: is not a regular file (a device, pipe or socket); napari-liif never replaces "
                          "it, even with --overwrite: choose another -o")
    if made_by_us(dst):
        return "write" if overwrite else "skip"
    if overwrite:
        return "write"
    raise OutputError(f"{dst}: exists and was not written by napari-liif (or was changed since); "
                      "pass --overwrite to replace it, or choose another -o")


def check_store(dst: str | Path, inputs: Inputs | None = None, *, overwrite: bool = False) -> str:
    """Whether the zarr store ``dst`` may be written: ``"write"``, ``"skip"`` (a complete store of
    ours) or an :class:`OutputError`."""
    dst = Path(dst)
    refuse_inputs(dst, inputs)
    state = store_state(dst)
    if state in ("absent", "empty", "ours-partial"):
        return "write"
    if state == "ours":
        return "write" if overwrite else "skip"
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
def _temp_name(dst: Path, kind: str) -> Path:
    return dst.with_name(f".{dst.name}.{kind}-{secrets.token_hex(4)}{dst.suffix}")


@contextlib.contextmanager
def atomic_file(dst: str | Path, *, record: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dst`` to write; on success it is renamed to ``dst``
    (and recorded as ours), on any failure or interrupt removed. The caller checks ``dst`` first."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(dst, "partial")
    try:
        yield tmp
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if record:
        record_file(dst)


def _remove_store(path: Path) -> None:
    """Remove a store of ours (or a link to one: the link only)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


@contextlib.contextmanager
def atomic_store(dst: str | Path) -> Iterator[Path]:
    """Yield a temporary store path beside ``dst``; when the block ends normally it replaces
    ``dst`` (moved aside first, removed after the swap); on any failure it is removed.
    The caller checks ``dst`` first (:func:`check_store`)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(dst, "partial")
    try:
        yield tmp
    except BaseException:
        if os.path.lexists(tmp):
            with contextlib.suppress(OSError):
                _remove_store(tmp)
        raise
    old = None
    if os.path.lexists(dst):
        old = _temp_name(dst, "old")
        os.rename(dst, old)
    os.rename(tmp, dst)
    if old is not None:
        _remove_store(old)


def remove_stale_partials(dst: str | Path) -> list[Path]:
    """Remove temporary stores of ``dst`` left by an interrupted run: only hidden folders named as
    :func:`atomic_store` names them that are incomplete stores of ours holding only zarr files."""
    dst = Path(dst)
    pattern = re.compile(rf"^\.{re.escape(dst.name)}\.(partial|old)-[0-9a-f]{{8}}{re.escape(dst.suffix)}$")
    removed = []
    if not dst.parent.is_dir():
        return removed
    for p in dst.parent.iterdir():
        if pattern.match(p.name) and not p.is_symlink() and store_state(p) in ("ours-partial", "ours"):
            shutil.rmtree(p)
            removed.append(p)
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
