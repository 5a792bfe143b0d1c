"""The two ways an output can fail: a refused destination and a full disk."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path


class OutputError(ValueError):
    """A destination napari-liif refuses to write (one line, starting with the path)."""


class DiskFullError(OSError):
    """The disk (or quota) filled up while writing an output; nothing was left under its name."""

    def __init__(self, dst: Path):
        self.message = f"no space left on device writing {dst}: free space or choose another -o"
        super().__init__(errno.ENOSPC, self.message)

    def __str__(self) -> str:
        return self.message


_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")


def is_disk_full(exc: BaseException, folder: Path) -> bool:
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
