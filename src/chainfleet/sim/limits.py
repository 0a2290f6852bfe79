"""The sim server's rate limits: admit a call or refuse it with a 429, and say so in headers.

:class:`RateLimits` holds one limit per setting, ``rpm`` (requests) and ``tpm`` (tokens): a
a :class:`~chainfleet.sim.bucket.TokenBucket` each (a minute's worth), or with ``window`` set
(strict mode) a :class:`~chainfleet.sim.window.WindowLimit`, or with ``bucket_seconds`` set a
:class:`~chainfleet.sim.shortbucket.SecondBucket` (a bucket of about a second). A call is
admitted when both hold what it needs, one request and ``P + max_tokens`` tokens, and is
charged that; the :class:`Reservation` it
gets back is settled to the real usage ``P + C`` once the answer is written (or to 0 when the
call failed and generated nothing). A refusal is a :class:`~chainfleet.sim.call.Failure`:

- ``too_large``: one request above ``tpm`` ("Request too large"), never admissible;
- ``rate_requests`` / ``rate_tokens``: the limit with the longer wait, which the message and
  the ``retry-after`` headers give.

Every answer carries the state of the limits the way each provider writes it:
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (OpenAI, the reset as a Go duration
such as ``1m2.5s``) or ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` (the
reset as an RFC 3339 instant). Nothing is charged for a refused call.

Example::

    limits = RateLimits(rpm=60, tpm=None)
    reservation = limits.admit(call)        # or raises Failure("rate_requests", retry_after=...)
    ...
    reservation.settle(call.prompt_tokens + completion_tokens)
    openai_limit_headers(limits)            # {"x-ratelimit-limit-requests": "60", ...}
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from chainfleet.sim.bucket import Grant, TokenBucket
from chainfleet.sim.call import Call, Failure
from chainfleet.sim.shortbucket import SecondBucket
from chainfleet.sim.window import WindowLimit

__all__ = [
    "RATE_LIMITED",
    "RateLimits",
    "Reservation",
    "anthropic_limit_headers",
    "go_duration",
    "openai_limit_headers",
    "openai_retry_headers",
    "retry_headers",
]

#: the failure kinds ``/sim/stats`` counts as ``rate_limited`` (``[[sim:429]]`` among them)
RATE_LIMITED = frozenset({"rate_requests", "rate_tokens", "rate_trigger", "too_large"})


class Reservation:
    """What one admitted request holds: its token grant, settled once to the real usage."""

    def __init__(self, tokens: TokenBucket | None, grant: Grant | None) -> None:
        self._tokens, self._grant = tokens, grant
        self.settled = False

    def settle(self, used: int) -> None:
        """Correct the charge to ``used`` tokens; later calls do nothing."""
        if not self.settled and self._tokens is not None and self._grant is not None:
            self._tokens.settle(self._grant, used)
        self.settled = True


class RateLimits:
    """The server's ``rpm`` and ``tpm`` limits (None: no limit), read through ``clock``.

    ``requests`` and ``tokens`` are the buckets (None when unlimited) the headers describe.
    """

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        *,
        window: float | None = None,
        bucket_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._rpm, self._tpm, self._window, self._seconds = rpm, tpm, window, bucket_seconds
        self.requests = self._bucket(rpm)
        self.tokens = self._bucket(tpm)

    def _bucket(self, limit: int | None) -> TokenBucket | None:
        if limit is None:
            return None
        if self._window is not None:
            return WindowLimit(limit, window=self._window, clock=self._clock)
        if self._seconds is not None:
            return SecondBucket(limit, seconds=self._seconds, clock=self._clock)
        return TokenBucket(limit, clock=self._clock)

    def change(
        self, rpm: int | None, tpm: int | None, window: float | None, bucket_seconds: float | None = None
    ) -> None:
        """New limits: a changed ``rpm`` or ``tpm`` starts a new, full bucket; a changed model
        (``window``, ``bucket_seconds``) both."""
        window_changed = (window, bucket_seconds) != (self._window, self._seconds)
        self._window, self._seconds = window, bucket_seconds
        if rpm != self._rpm or window_changed:
            self.requests = self._bucket(rpm)
        if tpm != self._tpm or window_changed:
            self.tokens = self._bucket(tpm)
        self._rpm, self._tpm = rpm, tpm

    def refill(self) -> None:
        """Start both limits again with full buckets (``/sim/reset``)."""
        self.requests = self._bucket(self._rpm)
        self.tokens = self._bucket(self._tpm)

    def admit(self, call: Call) -> Reservation:
        """Charge one request and ``P + max_tokens`` tokens, or raise the 429 that says why not."""
        need = call.prompt_tokens + call.max_tokens
        requests, tokens = self.requests, self.tokens
        if tokens is not None and need > tokens.limit:
            raise Failure("too_large", model=call.model, limit=tokens.limit, requested=need)
        blocked: list[tuple[float, str, TokenBucket, int]] = []
        for kind, bucket, amount in (("rate_requests", requests, 1), ("rate_tokens", tokens, need)):
            if bucket is not None and (wait := bucket.wait(amount)) > 0:
                blocked.append((wait, kind, bucket, amount))
        if blocked:  # the longer wait decides which limit the 429 names
            wait, kind, bucket, amount = max(blocked, key=lambda b: b[0])
            used = bucket.limit - bucket.remaining
            fields: dict[str, Any] = {
                "limit": bucket.limit,
                "used": used,
                "requested": amount,
                "wait": go_duration(wait),
            }
            raise Failure(kind, retry_after=wait, **fields)
        if requests is not None:
            requests.take(1)
        return Reservation(tokens, tokens.take(need) if tokens is not None else None)

    def named(self) -> tuple[tuple[str, TokenBucket], ...]:
        """The limits in force, by the name the headers give them (``requests``, ``tokens``)."""
        pairs = (("requests", self.requests), ("tokens", self.tokens))
        return tuple((name, bucket) for name, bucket in pairs if bucket is not None)


# --- what the answers say about them ------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """``seconds`` as Go prints a duration (OpenAI's reset headers), rounded up to the millisecond.

    >>> [go_duration(s) for s in (0, 0.12, 1, 1.5, 360, 3723.5)]
    ['0s', '120ms', '1s', '1.5s', '6m0s', '1h2m3.5s']
    """
    ms = math.ceil(seconds * 1000 - 1e-6) if seconds > 0 else 0
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _rfc3339(epoch: float) -> str:
    """An instant as Anthropic's reset headers give it: whole seconds (rounded up), UTC, ``Z``."""
    return datetime.fromtimestamp(math.ceil(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def openai_limit_headers(limits: RateLimits) -> dict[str, str]:
    """``x-ratelimit-limit-requests: 60``, ``...-remaining-...``, ``...-reset-...: 1.5s``."""
    headers = {}
    for name, bucket in limits.named():
        headers[f"x-ratelimit-limit-{name}"] = str(bucket.limit)
        headers[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining)
        headers[f"x-ratelimit-reset-{name}"] = go_duration(bucket.time_to_full())
    return headers


def anthropic_limit_headers(limits: RateLimits) -> dict[str, str]:
    """``anthropic-ratelimit-requests-limit: 60``, ``...-remaining``, ``...-reset: <RFC 3339>``."""
    headers = {}
    now = time.time()
    for name, bucket in limits.named():
        headers[f"anthropic-ratelimit-{name}-limit"] = str(bucket.limit)
        headers[f"anthropic-ratelimit-{name}-remaining"] = str(bucket.remaining)
        headers[f"anthropic-ratelimit-{name}-reset"] = _rfc3339(now + bucket.time_to_full())
    return headers


def retry_headers(wait: float) -> dict[str, str]:
    """``retry-after``: whole seconds, at least 1, as both providers send it with a 429."""
    return {"retry-after": str(max(1, math.ceil(wait - 1e-9)))}


def openai_retry_headers(wait: float) -> dict[str, str]:
    """OpenAI's: ``retry-after`` and ``retry-after-ms``."""
    return {**retry_headers(wait), "retry-after-ms": str(math.ceil(wait * 1000 - 1e-6))}
