"""Inputs are untouchable: the inputs of a run, and the test of a destination against them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .errors import OutputError


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
