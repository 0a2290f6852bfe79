"""``--limit-group NAME``: jobs on one machine that share a key share one request bucket.

Each model's bucket lives in a small JSON file under the user's cache folder
(``$XDG_CACHE_HOME/chainfleet/limits/NAME.json``, else ``~/.cache/...``), guarded by an
``fcntl`` lock. A job takes one request from it before each call, as from its own bucket, so
however many jobs join the group, together they keep to the limit exactly: no 429s to find the
fair share by, and no one job can take more than the rest leave it.

The bucket refills at the limit's rate on the wall clock (``time.time``, the one clock several
processes share) and holds at most ``burst`` seconds of it. A job's own limiter still meters
its tokens and reads the headers; the group only adds the shared request count.

Hand-written because it is a few lines over ``fcntl`` and JSON; no maintained library offers a
cross-process token bucket without a server (Redis and the like are one more thing to run).

Example::

    group = LimitGroup("nightly")
    wait = group.take("openai:gpt-4o-mini", per_minute=1200)   # 0.0: taken; else retry after it
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chainfleet.config import user_cache

__all__ = ["LimitGroup", "check_name", "group_folder"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> None:
    """Raise ``ConfigError`` (exit 2) unless ``name`` can name a group file."""
    from chainfleet.errors import ConfigError

    if not _NAME.match(name):
        raise ConfigError(
            "use letters, digits, '.', '_' or '-' (at most 64), starting with a letter or digit",
            where=f"--limit-group {name!r}",
        )


def group_folder() -> Path:
    """Where group files live: the user's cache folder."""
    return user_cache("limits")


class LimitGroup:
    """One named group's shared buckets (one per model), in one locked file."""

    def __init__(
        self,
        name: str,
        *,
        folder: Path | None = None,
        burst: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_name(name)
        self.name = name
        self.path = (folder or group_folder()) / f"{name}.json"
        self.burst = burst
        self.clock = clock
        self.taken = 0

    def take(self, model: str, *, per_minute: float) -> float:
        """Take one request of ``model`` from the group's bucket: 0.0 when taken, else the
        seconds until one is there (take nothing; ask again then)."""
        rate = per_minute / 60.0
        capacity = 1.0 + rate * self.burst
        with self._locked() as state:
            now = self.clock()
            bucket = state.setdefault(model, {"level": 0.0, "updated": now})
            level = min(capacity, float(bucket["level"]) + max(0.0, now - float(bucket["updated"])) * rate)
            bucket["updated"] = now
            if level >= 1.0 - 1e-9:
                bucket["level"] = level - 1.0
                self.taken += 1
                return 0.0
            bucket["level"] = level
            return (1.0 - level) / rate

    def _locked(self) -> _Locked:
        return _Locked(self.path)


class _Locked:
    """The group file, read under an exclusive lock and written back when the block ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: dict[str, Any] = {}
        self._fd = -1

    def __enter__(self) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        raw = b""
        while chunk := os.read(self._fd, 65536):
            raw += chunk
        try:
            loaded = json.loads(raw) if raw else {}
        except ValueError:
            loaded = {}  # a torn or foreign file: start the buckets again, empty
        self.state = loaded if isinstance(loaded, dict) else {}
        return self.state

    def __exit__(self, *exc: object) -> None:
        try:
            data = json.dumps(self.state).encode()
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.ftruncate(self._fd, 0)
            os.write(self._fd, data)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
