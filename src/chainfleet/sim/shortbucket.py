"""The sim server's third limiter model: a token bucket that holds about a second.

``chainfleet sim-server --bucket-seconds 1`` (setting ``bucket_seconds``) replaces each limit's
minute bucket with one continuously refilled bucket of ``ceil(limit / 60 * bucket_seconds)``
units, refilled at ``limit / 60`` a second. This is how providers describe their own limiters
(Anthropic documents a continuously replenished bucket and says a 60/min limit may be enforced
as 1 a second; OpenAI quantizes its limits to short intervals), and it differs from the other
two models in what the headers can tell a client:

- ``remaining`` is the bucket's level: a second's worth at most, so it says nothing of how much
  of the minute others used, only whether the bucket is empty right now;
- ``reset`` is the time until the bucket is full again (about a second).

A client that shares the key cannot reconstruct the others' share from ``remaining`` as it can
on the minute bucket (:mod:`chainfleet.sim.bucket`) or the sliding windows
(:mod:`chainfleet.sim.window`); it has the 429s to go by. A request above the bucket on its own
is admitted when the bucket is full (it goes into debt); one above ``limit`` never is.

Example::

    now = [0.0]
    bucket = SecondBucket(1200, seconds=1, clock=lambda: now[0])   # 20 units, 20 a second
    bucket.remaining        # 20
    for _ in range(20):
        bucket.take(1)
    bucket.wait(1)          # 0.05
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from chainfleet.sim.bucket import Grant, TokenBucket

__all__ = ["SecondBucket"]


class SecondBucket(TokenBucket):
    """One per-minute limit as a bucket of ``seconds`` worth; see the module docstring."""

    def __init__(self, limit: int, *, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(limit, clock=clock)
        self.capacity = max(1, math.ceil(limit / 60 * seconds))
        self._level = float(self.capacity)

    def _advance(self) -> float:
        now = self._clock()
        self._level = min(float(self.capacity), self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        return now

    @property
    def remaining(self) -> int:
        self._advance()
        return max(0, math.floor(self._level + 1e-9))

    def time_to_full(self) -> float:
        self._advance()
        return max(0.0, (self.capacity - self._level) / self.rate)

    def wait(self, amount: int) -> float:
        if amount > self.limit:
            return math.inf
        self._advance()
        short = max(0.0, (min(amount, self.capacity) - self._level) / self.rate)
        return short if short > 1e-9 else 0.0

    def take(self, amount: int) -> Grant:
        now = self._advance()
        self._level -= amount  # one request above the bucket goes into debt
        return Grant(now, amount)

    def settle(self, grant: Grant, amount: int) -> None:
        self._advance()
        self._level = min(float(self.capacity), self._level + grant.amount - amount)
        grant.amount = amount
