"""Training run folders: a run writes its checkpoints and logs only in a new or empty folder, or
in a run folder of ours (marked by ``.napari-liif-run``) that it resumes."""

from __future__ import annotations

import os
from pathlib import Path

from .checks import check_folder_writable
from .errors import OutputError

RUN_MARKER = ".napari-liif-run"  # in every training run folder we create


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
