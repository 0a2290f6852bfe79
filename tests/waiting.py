"""Waiting on something a test can observe (a server's counts, rows in a store, files), with a
deadline that fails the test naming what never happened. One helper for every e2e test that
polls: the deadline is a generous bound on a loaded machine, never a timing assertion."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    what: str,
    timeout: float = 60,
    poll: float = 0.02,
    alive: subprocess.Popen[Any] | None = None,
) -> T:
    """Poll ``condition`` until it is truthy and return its value; fail with ``what`` after
    ``timeout`` seconds, or at once if the process ``alive`` has ended meanwhile."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert alive is None or alive.poll() is None, f"{what}: the process ended (exit {alive.returncode})"
        assert time.monotonic() < deadline, what
        time.sleep(poll)
    return value
