"""Temporary outputs: their hidden names beside the destination, and the removal of those that a
run which ended (killed, crashed) left behind. A temporary whose owner lives is never touched
(:mod:`napari_liif.owners`)."""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import shutil
from pathlib import Path

from ..owners import folder_lock, take_if_abandoned
from .stores import store_state

#: ``.NAME.KIND-HEADCHECK.SUFFIX``, KIND ``partial`` (being written) or ``old`` (moved aside)
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<head>[0-9a-f]{8})(?P<check>[0-9a-f]{8})?(?P<suf>.*)$")


def temp_name(dst: Path, kind: str) -> Path:
    """``.NAME.KIND-TOKEN.SUFFIX``: the token's second half checks its first (a file a user named
    so by chance is never taken for one of ours)."""
    head = secrets.token_hex(4)
    return dst.with_name(f".{dst.name}.{kind}-{head}{name_check(head, dst.name)}{dst.suffix}")


def name_check(head: str, name: str) -> str:
    """The second half of a temporary's token: it checks the first (``head``) and the output's ``name``."""
    return hashlib.sha256(f"{head}/{name}".encode()).hexdigest()[:8]


def remove_path(path: Path) -> None:
    """Remove a store or file of ours (or a link to one: the link only)."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_partials(dst: str | Path) -> list[Path]:
    """Remove the temporaries of ``dst`` whose owner is gone (:mod:`napari_liif.owners`)."""
    dst = Path(dst)
    return remove_stale_in(dst.parent, [dst.name])


def remove_stale_in(folder: str | Path, names) -> list[Path]:
    """Remove the temporaries of the outputs ``names`` in ``folder`` left by runs that ended
    (killed, crashed): only hidden entries named as :func:`temp_name` names them (the names
    :func:`napari_liif.outputs.atomic_file` and :func:`napari_liif.outputs.atomic_store` use)
    whose owner's lock is free; files only with a valid name check, stores only when they hold
    nothing but a store of ours. A temporary of a live run is never touched."""
    folder, names = Path(folder), set(names)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    with folder_lock(folder):
        for p in folder.iterdir():
            m = TEMP_NAME.match(p.name)
            if not m or m["name"] not in names or m["suf"] != Path(m["name"]).suffix or p.is_symlink():
                continue
            if p.is_dir():
                if store_state(p) not in ("ours-partial", "ours", "empty"):
                    continue
            elif not (p.is_file() and m["check"] == name_check(m["head"], m["name"])):
                continue
            owned = take_if_abandoned(p)
            if owned is not None:
                try:
                    remove_path(p)
                    removed.append(p)
                finally:
                    owned.release()
    return removed
