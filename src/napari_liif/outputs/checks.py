"""The decision, before any work: may this file, store or folder be written, skipped, or neither?"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..provenance import normalize
from .errors import OutputError
from .filelog import our_record
from .inputs import Inputs, refuse_inputs
from .stores import foreign_entry, store_mark, store_state, zarr_attrs


def same_made(recorded, made) -> bool:
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
        return "skip" if not overwrite and same_made(rec.get("made"), made) else "write"
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
        return "skip" if not overwrite and same_made(store_mark(dst).get("made"), made) else "write"
    if state == "folder":
        what = foreign_entry(dst) if zarr_attrs(dst) is not None else None
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
