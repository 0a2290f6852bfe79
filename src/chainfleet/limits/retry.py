"""Retry policy: which errors are retried, how many times, and how long to wait between tries.

The rules, in one screen:

- only ``RetryableError`` is retried (429, 5xx, 529, timeouts, dropped connections); a
  ``PermanentError`` fails the item now and a ``FatalError`` stops the run;
- at most ``max_attempts`` attempts per call (the first one included);
- the wait is the server's word when it gave one (``retry_after``), else exponential backoff
  ``base * 2 ** (attempt - 1)`` (1, 2, 4 ... s) capped at ``cap``, with full jitter: a random
  wait between zero and that bound, so that many failed calls do not come back at once.

Example::

    policy = RetryPolicy(max_attempts=4)
    if policy.should_retry(error, attempt):
        await clock.sleep(policy.wait(error, attempt, rng))
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from chainfleet.errors import CallError, ContentFiltered, FatalError, InvalidRequest, RetryableError

__all__ = ["RetryPolicy", "retry_in_next_pass"]


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How one call is retried. Frozen: share one across every call of a run."""

    max_attempts: int = 4
    base: float = 1.0
    cap: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must not be negative")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether a call that failed with ``error`` on attempt ``attempt`` (1-based) goes again."""
        return isinstance(error, RetryableError) and attempt < self.max_attempts

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The backoff bound after attempt ``attempt``: 1, 2, 4 ... s, capped; jittered if set."""
        bound = min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))
        if not self.jitter:
            return bound
        return rng.uniform(0, bound) if rng is not None else random.uniform(0, bound)

    def wait(self, error: BaseException, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next attempt: the server's word first, else backoff."""
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None and retry_after >= 0:
            return float(retry_after)
        return self.backoff(attempt, rng)


def retry_in_next_pass(error: CallError | Exception) -> bool:
    """Whether an item that failed with ``error`` is worth another pass at the end of the run.

    Transient failures and invalid outputs may go another way later; a request the provider
    rejected as invalid or filtered would be rejected again, and a fatal error ends the run.
    """
    return not isinstance(error, InvalidRequest | ContentFiltered | FatalError)
