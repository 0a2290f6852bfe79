"""Per-model rate limiting: requests/min and tokens/min budgets, a shared cooldown gate, and
learning the limits from the provider's headers.

One :class:`ModelLimiter` per model, shared by every stage that uses the model. Before a call the
runner reserves one request and the call's token estimate (prompt tokens + ``max_tokens``);
after it, :meth:`ModelLimiter.settle` refunds what the call did not use. The budgets are token
buckets refilled continuously. Their capacity is small (``burst`` seconds of the rate), because
providers enforce their per-minute limits over much shorter windows: a full minute's burst at the
start would be answered with 429s.

A 429 closes the model's **cooldown gate** until the server's reset: every call waiting for the
model waits for the gate, not only the one that was refused, and they wake spread over a short
jitter window rather than all at once.

Limits come from the pipeline's ``limits:`` block or ``--rpm/--tpm``; each response's rate-limit
headers correct them (a run told nothing learns its tier's limits from the first response).

Why hand-written: ``aiolimiter`` (the model this follows) meters one quantity with one bucket;
here two buckets are reserved together, refunded after the call, fed by response headers and
closed by a shared gate, all on an injectable clock so tests take no real time.

Example::

    limiter = ModelLimiter(rpm=500, tpm=200_000)
    reservation = await limiter.acquire(tokens=1_800)
    ...                                   # make the call
    limiter.settle(reservation, used_tokens=1_240)
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
from dataclasses import dataclass
from typing import Any

from .clock import Clock, SystemClock
from .headers import RateLimitInfo

__all__ = ["AdaptiveConcurrency", "ModelLimiter", "Reservation", "TokenBucket", "estimate_tokens"]


def estimate_tokens(text: str, model: str | None = None) -> int:
    """Prompt tokens of ``text``: tiktoken for OpenAI models it knows, else ~4 characters a token."""
    encoder = _encoder(model) if model and _tiktoken_model(model) else None
    if encoder is not None:
        return len(encoder.encode(text))
    return max(1, (len(text.encode("utf-8")) + 3) // 4) if text else 0


@functools.lru_cache(maxsize=64)
def _encoder(model: str) -> Any:
    """tiktoken's encoder for ``model``, or None (not installed, unknown model, or its data
    cannot be downloaded offline): looked up once per model, not per call."""
    try:
        import tiktoken

        return tiktoken.encoding_for_model(model)
    except Exception:
        return None


def _tiktoken_model(model: str) -> bool:
    return model.startswith(("gpt-", "o1", "o3", "o4", "text-embedding", "chatgpt"))


class TokenBucket:
    """A budget of ``rate`` units a second, holding at most ``capacity``, refilled continuously."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now).

        A request larger than the capacity waits until the bucket is full and then takes it,
        going into debt, so one oversized call is slow rather than impossible.
        """
        self.refill(now)
        needed = min(amount, self.capacity) - self.level
        return 0.0 if needed <= 1e-9 else needed / self.rate  # 1e-9: float dust is no wait

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount

    def give(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)

    def resize(self, rate: float, capacity: float, now: float) -> None:
        self.refill(now)
        self.rate, self.capacity = rate, capacity
        self.level = min(self.level, capacity)


@dataclass
class Reservation:
    """What one call reserved, and how long it waited for it."""

    tokens: int
    limiter_wait: float = 0.0
    cooldown_wait: float = 0.0


class ModelLimiter:
    """Requests/min and tokens/min for one model, with a shared cooldown gate.

    ``rpm``/``tpm`` of ``None`` mean "not told": then nothing is metered until a response's
    headers tell the limit. ``burst`` is the bucket capacity in seconds of the rate; ``headroom``
    is the share of a learned limit used (a margin for other clients of the same key).
    """

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        burst: float = 1.0,
        headroom: float = 0.98,
        wake_jitter: float = 0.5,
    ) -> None:
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.burst = burst
        self.headroom = headroom
        self.wake_jitter = wake_jitter
        now = self.clock.now()
        self.told_rpm, self.told_tpm = rpm, tpm
        self.requests = self._bucket(rpm, now)
        self.tokens = self._bucket(tpm, now)
        self.reopen_at = 0.0
        self.limit_rpm: float | None = rpm
        self.limit_tpm: float | None = tpm
        self._lock = asyncio.Lock()
        self.cooldowns = 0

    def _bucket(self, per_minute: float | None, now: float) -> TokenBucket | None:
        if per_minute is None:
            return None
        rate = per_minute / 60.0
        return TokenBucket(rate, max(1.0, rate * self.burst), now)

    # -- before and after a call ---------------------------------------------------------------

    async def acquire(self, tokens: int, requests: int = 1) -> Reservation:
        """Wait for the gate and for ``requests`` requests (one call: 1) and ``tokens`` tokens;
        take them. (A block of several is what a Ray worker leases for its next calls.)

        The time spent waiting is split into ``cooldown_wait`` (while the gate was closed by a
        429) and ``limiter_wait`` (the budgets), whether it was spent sleeping or queued
        behind earlier callers.
        """
        reservation = Reservation(tokens=tokens)
        started = self.clock.now()
        async with self._lock:  # FIFO: calls are served in the order they asked
            while True:
                now = self.clock.now()
                if now < self.reopen_at:
                    await self.clock.sleep(self.reopen_at - now + self.rng.uniform(0, self.wake_jitter))
                    continue
                wait = max(
                    self.requests.wait_for(requests, now) if self.requests else 0.0,
                    self.tokens.wait_for(tokens, now) if self.tokens else 0.0,
                )
                if wait <= 0:
                    break
                await self.clock.sleep(wait)
            now = self.clock.now()
            if self.requests:
                self.requests.take(requests, now)
            if self.tokens:
                self.tokens.take(tokens, now)
        waited = now - started
        reservation.cooldown_wait = min(waited, max(0.0, self.reopen_at - started))
        reservation.limiter_wait = waited - reservation.cooldown_wait
        return reservation

    def settle(self, reservation: Reservation, used_tokens: int | None) -> None:
        """Refund the tokens a call reserved but did not use (or charge the excess)."""
        if self.tokens is None or used_tokens is None:
            return
        now = self.clock.now()
        difference = reservation.tokens - used_tokens
        if difference > 0:
            self.tokens.give(difference, now)
        elif difference < 0:
            self.tokens.take(-difference, now)

    def release(self, reservation: Reservation) -> None:
        """A call that was refused before it ran (e.g. a 429): it used none of its tokens."""
        if self.tokens is not None:
            self.tokens.give(reservation.tokens, self.clock.now())

    # -- what the server says --------------------------------------------------------------------

    def cooldown(self, seconds: float) -> None:
        """Close the gate for ``seconds`` (a 429): every caller of this model waits."""
        until = self.clock.now() + max(0.0, seconds)
        if until > self.reopen_at:
            self.reopen_at = until
            self.cooldowns += 1
        # What was left in our buckets was evidently not there on the server's side. Empty
        # them as of the reopening, so the calls queued behind the gate flow out at the
        # sustained rate instead of all at once.
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.refill(self.clock.now())
                bucket.level = min(bucket.level, 0.0)
                bucket.updated = max(bucket.updated, self.reopen_at)

    def observe(self, info: RateLimitInfo) -> None:
        """Correct the limits and the buckets from a response's rate-limit headers."""
        if info.empty:
            return
        now = self.clock.now()
        if info.limit_requests and self.told_rpm is None:
            self.requests = self._learn(self.requests, info.limit_requests, now)
            self.limit_rpm = info.limit_requests * self.headroom
        if info.limit_tokens and self.told_tpm is None:
            self.tokens = self._learn(self.tokens, info.limit_tokens, now)
            self.limit_tpm = info.limit_tokens * self.headroom
        self._sync(self.requests, info.remaining_requests, now)
        self._sync(self.tokens, info.remaining_tokens, now)

    def _learn(self, bucket: TokenBucket | None, limit: int, now: float) -> TokenBucket:
        rate = limit * self.headroom / 60.0
        capacity = max(1.0, rate * self.burst)
        if bucket is None:
            return TokenBucket(rate, capacity, now)
        if not math.isclose(bucket.rate, rate):
            bucket.resize(rate, capacity, now)
        return bucket

    @staticmethod
    def _sync(bucket: TokenBucket | None, remaining: int | None, now: float) -> None:
        """When the server has less left than we think we may spend, believe the server."""
        if bucket is None or remaining is None:
            return
        bucket.refill(now)
        bucket.level = min(bucket.level, float(remaining))


class AdaptiveConcurrency:
    """How many chains may be in flight, found by trying: additive increase, multiplicative
    decrease (AIMD), as TCP does.

    For servers that limit concurrency rather than rate (an Ollama queue, vLLM, a provider
    answering 503 when busy). Workers hold a slot per chain (:meth:`acquire`/:meth:`release`);
    every call reports how it went (:meth:`observe`). A success raises the limit by
    ``1 / limit`` (one step per round of calls), ten times more gently near the limit at the
    last refusal; a 429/503/529, or a latency over
    ``latency_factor`` times the best seen, multiplies it by ``decrease`` (at most once per
    ``cooldown`` calls, so one burst of refusals is one decrease). The limit stays within
    [1, ``cap``].
    """

    def __init__(
        self,
        cap: int,
        *,
        start: int = 4,
        decrease: float = 0.8,
        latency_factor: float = 3.0,
    ) -> None:
        self.cap = cap
        self.limit = float(min(cap, start))
        self.decrease = decrease
        self.latency_factor = latency_factor
        self.in_flight = 0
        self.best_latency: float | None = None
        self.max_seen = self.limit
        self.decreases = 0
        #: the limit at the last refusal: increases slow down near it
        self.ceiling: float | None = None
        self._calls_since_decrease = 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def acquire(self) -> None:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1

    async def release(self) -> None:
        changed = self._condition()
        async with changed:
            self.in_flight -= 1
            changed.notify_all()

    async def observe(self, *, ok: bool, overloaded: bool, latency: float | None) -> None:
        """Adjust the limit after one call."""
        self._calls_since_decrease += 1
        if overloaded:
            self._decrease()
        elif ok and latency is not None:
            if self.best_latency is None or latency < self.best_latency:
                self.best_latency = latency
            if latency > self.best_latency * self.latency_factor:
                self._decrease()
            elif self.ceiling is not None and self.limit >= self.ceiling - 1:
                # near where the server last refused: probe upwards ten times more gently
                self.limit = min(float(self.cap), self.limit + 0.1 / self.limit)
            else:
                self.limit = min(float(self.cap), self.limit + 1.0 / self.limit)
        self.max_seen = max(self.max_seen, self.limit)
        changed = self._condition()
        async with changed:
            changed.notify_all()

    def _decrease(self) -> None:
        # one decrease per round of calls: the refusals of one burst are one signal
        if self._calls_since_decrease >= max(1, int(self.limit)) or self.decreases == 0:
            self.ceiling = self.limit
            self.limit = max(1.0, self.limit * self.decrease)
            self.decreases += 1
            self._calls_since_decrease = 0
