"""The sim server's strict mode: per-minute limits enforced over sliding windows.

``chainfleet sim-server --window 1`` (setting ``window``) replaces the token bucket of each
limit with two sliding windows: at most ``floor(limit / 60 * window)`` units in any ``window``
seconds (1,200 requests/min over 1-second windows: 20 in any second) and at most ``limit`` in
any 60 seconds. Nothing carries over: a client that sends its first wave before reading any
header, or starts a told limit with a full bucket, is refused at once, as strict providers do.

The headers describe the minute window: ``remaining`` is ``limit`` less what was counted in
the last 60 s, and the reset is the time until that count is zero again. So a client sharing
the key sees the remaining count fall by more than its own use.

A request above ``floor(limit / 60 * window)`` on its own is admitted when the short window is
empty (it fills it); one above ``limit`` never is.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from chainfleet.sim.bucket import Grant, TokenBucket

__all__ = ["WindowLimit"]

MINUTE = 60.0


class _Entry(Grant):
    """One admitted amount, kept in the windows until it is a minute old."""


class WindowLimit(TokenBucket):
    """One per-minute limit over a short sliding window and the minute's sliding window.

    Example::

        now = [0.0]
        limit = WindowLimit(1200, window=1.0, clock=lambda: now[0])
        for _ in range(20):
            limit.take(1)
        limit.wait(1)      # 1.0: twenty in the last second
    """

    def __init__(self, limit: int, *, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(limit, clock=clock)
        self.window = window
        self.window_cap = max(1, math.floor(limit / 60 * window + 1e-9))
        self._entries: deque[_Entry] = deque()

    def _expire(self) -> float:
        now = self._clock()
        while self._entries and self._entries[0].at <= now - MINUTE:
            self._entries.popleft()
        return now

    def _used(self, since: float) -> int:
        return sum(e.amount for e in self._entries if e.at > since)

    @property
    def remaining(self) -> int:
        now = self._expire()
        return max(0, self.limit - self._used(now - MINUTE))

    def time_to_full(self) -> float:
        now = self._expire()
        return max(0.0, self._entries[-1].at + MINUTE - now) if self._entries else 0.0

    def wait(self, amount: int) -> float:
        if amount > self.limit:
            return math.inf
        now = self._expire()
        short = self._free_at(now, self.window, self.window_cap, min(amount, self.window_cap))
        minute = self._free_at(now, MINUTE, self.limit, amount)
        wait = max(short, minute)
        return wait if wait > 1e-9 else 0.0

    def _free_at(self, now: float, span: float, cap: int, amount: int) -> float:
        """Seconds until the last ``span`` seconds hold at most ``cap - amount``."""
        inside = [e for e in self._entries if e.at > now - span]
        used = sum(e.amount for e in inside)
        for entry in inside:  # oldest first: each leaves the window at at + span
            if used + amount <= cap:
                break
            used -= entry.amount
            if used + amount <= cap:
                return entry.at + span - now
        return 0.0

    def take(self, amount: int) -> Grant:
        now = self._expire()
        entry = _Entry(now, amount)
        self._entries.append(entry)
        return entry

    def settle(self, grant: Grant, amount: int) -> None:
        grant.amount = max(0, amount)
