"""Our own files: the hidden per-folder log ``.napari-liif-outputs`` of the files napari-liif wrote
(name, size, modification time, SHA-256, and ``made``: :mod:`napari_liif.provenance`)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..provenance import content_digest

LOG_NAME = ".napari-liif-outputs"  # per folder: one JSON line per file we wrote
_LOG_HEADER = {"napari_liif_outputs": 1}


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
