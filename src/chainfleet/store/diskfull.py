"""A full disk is a clean end: one line naming the folder and the space needed, exit code 74
(``EX_IOERR`` of sysexits.h), the resume command, and nothing finished lost.

Every stage result is committed before its chain goes on, so what failed to be written when
the disk filled is only the group of results being committed at that moment: their chains
are resumed (and those calls paid again) by ``chainfleet resume``.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

__all__ = ["EXIT_DISK_FULL", "is_disk_full", "message"]

EXIT_DISK_FULL = 74
#: what a resume needs at the least: SQLite's WAL is checkpointed every ~8 MB
_MINIMUM = 16 * 1024 * 1024


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk or the quota is full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.Error) and "full" in str(current).lower():
            return True  # "database or disk is full" (SQLITE_FULL)
        current = current.__cause__ or current.__context__
    return False


def message(out: Path) -> str:
    """The one line to print: the folder, the free space and what to free, and how to go on."""
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        free = 0
    used = sum(p.stat().st_size for p in out.glob("run.db*") if p.is_file()) if out.is_dir() else 0
    needed = max(_MINIMUM, used)  # the store may need as much again while it checkpoints
    return (
        f"error: {out}: the disk is full ({_mb(free)} free; free at least {_mb(needed)}). "
        f"Every finished stage result is kept: free some space, then: chainfleet resume {out}"
    )


def _mb(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"
