"""An endpoint that is not there: stop knocking.

A refused key or an unknown model stops a run at once (a fatal error). A base URL where nothing
listens used to be retried item after item: 50 items against a dead port took 78 s, 400
attempts and 356 s of backoff to end in exit 1. Connection failures are retryable one by one (a
dropped connection, a restart), so no single failure can say the endpoint is gone; a streak
can. :class:`EndpointHealth` counts, per endpoint, the connection failures since the last
success: at ``failures`` in a row (default 10) with no success in the last ``quiet`` seconds
(default 30), the endpoint is down, and the call that saw it raises :class:`EndpointDown`, a
fatal error: admission stops, the calls in flight end, everything finished is kept, and
``chainfleet resume`` goes on once the server is back.

Only connection failures count (nothing answered). A 5xx or a 429 is a server that answers and
ends a streak; a timeout neither adds to one nor ends it.

Example::

    health = EndpointHealth(clock)
    health.ok("http://127.0.0.1:8000/v1")           # after a call that got an answer
    down = health.failed("http://127.0.0.1:8000/v1", exc)   # an EndpointDown, or None
"""

from __future__ import annotations

from dataclasses import dataclass

from chainfleet.clock import Clock
from chainfleet.errors import CallError, ConnectionFailed, EndpointDown, Timeout

__all__ = ["DEFAULT_FAILURES", "DEFAULT_QUIET", "EndpointHealth"]

#: connection failures in a row that make an endpoint down
DEFAULT_FAILURES = 10
#: ... when none of its calls succeeded in this many seconds
DEFAULT_QUIET = 30.0


@dataclass
class _Streak:
    failures: int = 0
    last_ok: float | None = None


class EndpointHealth:
    """Connection-failure streaks per endpoint; see the module docstring."""

    def __init__(
        self, clock: Clock, *, failures: int = DEFAULT_FAILURES, quiet: float = DEFAULT_QUIET
    ) -> None:
        self.clock, self.threshold, self.quiet = clock, failures, quiet
        self._streaks: dict[str, _Streak] = {}

    def ok(self, endpoint: str) -> None:
        """A call to ``endpoint`` got an answer (any answer: it is there)."""
        streak = self._streaks.setdefault(endpoint, _Streak())
        streak.failures, streak.last_ok = 0, self.clock.now()

    def failed(self, endpoint: str, error: CallError) -> EndpointDown | None:
        """A call to ``endpoint`` failed with ``error``: the fatal error to raise instead when
        this makes the endpoint down, else None."""
        if isinstance(error, Timeout):  # slow or gone: it neither ends the streak nor adds to it
            return None
        if not isinstance(error, ConnectionFailed):  # it answered (an error is an answer)
            self._streaks.setdefault(endpoint, _Streak()).failures = 0
            return None
        streak = self._streaks.setdefault(endpoint, _Streak())
        streak.failures += 1
        recent = streak.last_ok is not None and self.clock.now() - streak.last_ok < self.quiet
        if streak.failures < self.threshold or recent:
            return None
        return EndpointDown(
            f"{endpoint} does not answer: {streak.failures} connections in a row failed and none "
            f"succeeded in the last {self.quiet:g} s (last error: {error})"
        )
