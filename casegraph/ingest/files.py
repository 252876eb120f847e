"""Input paths must be regular files: a device, FIFO or folder in their place is named as such.

Reading ``/dev/zero`` would never end and a FIFO can block forever, so both are refused
before anything is opened; a broken symbolic link is told apart from a missing file.
"""

from __future__ import annotations

import stat
from pathlib import Path

from casegraph.errors import InputError


def check_regular_file(path: Path, what: str, fix: str) -> None:
    """Raise an InputError naming ``path`` unless it is (a link to) a regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        problem = "is a broken symbolic link" if path.is_symlink() else "not found"
        raise InputError(f"{what} {problem}", file=path, fix=fix) from None
    except OSError as exc:
        raise InputError(f"cannot open the {what} ({exc.strerror})", file=path, fix=fix) from None
    if not stat.S_ISREG(mode):
        target = f" (a link to {path.resolve()})" if path.is_symlink() else ""
        raise InputError(f"{what} is not a regular file but a {file_kind(mode)}{target}",
                         file=path, fix=fix)


def file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"
