"""Our own zarr stores: the ``napari_liif`` attribute (``complete``, ``made``) a store we wrote
carries, and what a folder at a store's name holds."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ZARR_KEY = "napari_liif"  # attribute of every store we write: {"complete": bool}
_ZARR_FILES = re.compile(r"^(\.zarray|\.zattrs|\.zgroup|\.zmetadata|zarr\.json|\d+([./]\d+)*)$")
_ZARR_DIRS = re.compile(r"^(\d+|c)$")


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


def zarr_attrs(store: Path) -> dict | None:
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
    mark = (zarr_attrs(Path(store)) or {}).get(ZARR_KEY)
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
    attrs = zarr_attrs(store)
    if attrs is None or foreign_entry(store) is not None:
        return "folder"
    mark = attrs.get(ZARR_KEY)
    if isinstance(mark, dict):
        return "ours" if mark.get("complete") is True else "ours-partial"
    return "foreign-store"
