"""The sim server's rate limits: one per-minute limit as a token bucket, the way providers do it.

A bucket per limit (requests or tokens) holds a minute's worth, starts full and refills
continuously (``limit / 60`` a second); and, so a full bucket cannot be spent in one burst, a
short bucket of ``ceil(limit / 30)`` (two seconds' worth) is refilled at the same rate. A client
keeping to the rate is never refused; one that bursts past two seconds' worth is. A single
request larger than the short bucket is admitted when it is full.

The ``x-ratelimit-*`` / ``anthropic-ratelimit-*`` headers describe the minute bucket (remaining,
and the time until it is full again); the short bucket shows only in a 429's wait. Strict mode
(sliding windows, no burst carried over) is :mod:`chainfleet.sim.window`, a subclass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BURST_WINDOW", "Grant", "TokenBucket"]

#: the short window over which a per-minute limit is also enforced (see TokenBucket)
BURST_WINDOW = 2.0


@dataclass
class Grant:
    """One charge to a bucket: when it was taken and how much (corrected by ``settle``)."""

    at: float
    amount: int


class TokenBucket:
    """One per-minute limit (requests or tokens), enforced the way providers do it.

    Two continuously refilled buckets, both at ``limit / 60`` units a second: the minute bucket
    holds ``limit`` units (it starts full), and a short bucket holds ``window_cap =
    ceil(limit / 60 * 2)``, two seconds' worth, so a full minute cannot be spent in one burst.
    A request is admitted when both hold its amount; an amount above ``window_cap`` on its own
    (one big request) is admitted when the short bucket is full, and goes into debt. An amount
    above ``limit`` is never admissible (:meth:`wait` is ``inf``). A client that keeps to the
    rate, with the ordinary jitter of a network, is never refused; one that bursts is.

    Time comes from ``clock`` (monotonic seconds), so tests drive it without sleeping::

        now = [0.0]
        bucket = TokenBucket(60, clock=lambda: now[0])
        bucket.take(1), bucket.take(1)
        bucket.wait(1)      # 1.0: the short bucket (2 units) is empty, refilling at 1 a second
        now[0] += 1.0
        bucket.wait(1)      # 0.0
    """

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit
        self.rate = limit / 60
        self.window_cap = math.ceil(limit / 60 * BURST_WINDOW)
        self._clock = clock
        self._level = float(limit)
        self._short = float(self.window_cap)
        self._stamp = clock()

    def _advance(self) -> float:
        now = self._clock()
        gained = (now - self._stamp) * self.rate
        self._level = min(float(self.limit), self._level + gained)
        self._short = min(float(self.window_cap), self._short + gained)
        self._stamp = now
        return now

    @property
    def remaining(self) -> int:
        """Whole units in the bucket now (what the ``remaining`` headers say)."""
        self._advance()
        return max(0, math.floor(min(self._level, self._short + self.limit - self.window_cap)))

    def time_to_full(self) -> float:
        """Seconds until the bucket is full again (what the ``reset`` headers say)."""
        self._advance()
        return max(0.0, (self.limit - self._level) / self.rate)

    def wait(self, amount: int) -> float:
        """0 if ``amount`` can be taken now, else the seconds until it can (``inf``: never)."""
        if amount > self.limit:
            return math.inf
        self._advance()
        minute = max(0.0, (amount - self._level) / self.rate)
        short = max(0.0, (min(amount, self.window_cap) - self._short) / self.rate)
        return max(minute, short) if max(minute, short) > 1e-9 else 0.0

    def take(self, amount: int) -> Grant:
        """Charge ``amount`` (call :meth:`wait` first); the grant can be :meth:`settle`-d later."""
        now = self._advance()
        self._level -= amount
        # one request above the short bucket empties it rather than owing it for long
        self._short = max(0.0, self._short - amount) if amount > self.window_cap else self._short - amount
        return Grant(now, amount)

    def settle(self, grant: Grant, amount: int) -> None:
        """Correct a grant to what was really used: the difference goes back (or is charged)."""
        self._advance()
        self._level = min(float(self.limit), self._level + grant.amount - amount)
        self._short = min(float(self.window_cap), self._short + grant.amount - amount)
        grant.amount = amount
