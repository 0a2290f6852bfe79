"""Per-model rate limiting: requests/min and tokens/min budgets, a shared cooldown gate, and
learning the limits from the provider's headers.

One :class:`ModelLimiter` per model, shared by every stage that uses the model. Before a call the
runner reserves one request and the call's token estimate (prompt tokens + ``max_tokens``, see
:mod:`chainfleet.limits.tokens`); after it, :meth:`ModelLimiter.settle` refunds what the call
did not use. The budgets are token buckets refilled continuously. Their capacity is small
(``burst`` seconds of the rate), so a late wake-up is caught up; and a window guard never lets
more than a second's worth of requests leave in any one second, because strict providers
enforce their per-minute limits over windows as short as a second (1,200/min: at most 20 in
any second), where catching up in a burst would be refused. A full minute's burst at the
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
import math
import random
from collections import deque
from dataclasses import dataclass

from chainfleet.clock import Clock, SystemClock
from chainfleet.errors import InvalidRequest
from chainfleet.limits.group import LimitGroup
from chainfleet.limits.headers import RateLimitInfo
from chainfleet.limits.sharing import KeyShare

__all__ = ["ModelLimiter", "Reservation", "TokenBucket", "TooLarge"]


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
    #: the call is the slow-start probe: others wait for its headers
    probe: bool = False
    #: the limiter metered this call (a limit was known when it left)
    metered: bool = False
    #: when the call left (the limiter's clock; None: not yet)
    sent_at: float | None = None


class TooLarge(InvalidRequest):
    """One call needs more tokens than the tokens/min limit allows in a whole minute."""

    kind = "invalid_request"


class ModelLimiter:
    """Requests/min and tokens/min for one model, with a shared cooldown gate.

    ``rpm``/``tpm`` of ``None`` mean "not told": then the first call goes alone (a **probe**,
    slow start) and the others wait for its answer, whose headers tell the limits; a server
    that sends no rate-limit headers is then not metered. A limit, told or learned, starts with
    an almost empty bucket (one request, no tokens), so the first seconds do not add a burst to
    the rate. ``burst`` is the bucket capacity in seconds of the rate; ``headroom`` is the share
    of a learned limit used. A told limit above the one the server's headers state gives way to
    the server's. A :class:`~chainfleet.limits.sharing.KeyShare` lowers the rate when the signs say
    another job uses the same key, and lets it grow back.
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
        probe: int = 1,
        share: KeyShare | None = None,
        group: tuple[LimitGroup, str] | None = None,
        hidden_bucket: bool = True,
    ) -> None:
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.burst = burst
        self.headroom = headroom
        self.wake_jitter = wake_jitter
        now = self.clock.now()
        self.told_rpm, self.told_tpm = rpm, tpm
        #: the limits as the server's headers state them (None: not said)
        self.server_rpm: int | None = None
        self.server_tpm: int | None = None
        self.requests = self._bucket(rpm, now, 1.0)
        self.tokens = self._bucket(tpm, now, 1.0)
        self.reopen_at = 0.0
        self._jitter = 0.0
        self._largest = 0
        #: when this process's calls of the last second left (the 1-second window guard)
        self._window: deque[float] = deque()
        #: calls admitted, tokens they used (as settled), and when the first and last went
        self.sent = 0
        self.used_tokens = 0
        self.first_sent: float | None = None
        self.last_sent = 0.0
        self.limit_rpm: float | None = rpm
        self.limit_tpm: float | None = tpm
        self._lock = asyncio.Lock()
        self.cooldowns = 0
        #: calls inside :meth:`acquire`, not yet admitted
        self.waiting = 0
        self.share = share or KeyShare()
        #: slow start: until a response has been read, at most ``probe`` calls in flight
        self.probing = rpm is None and tpm is None and probe > 0
        self.probe = probe
        self.probes_out = 0
        self.probes = 0
        self._probe_back = asyncio.Event()
        #: ``--limit-group``: (the group, this model's name in it)
        self.group = group
        #: read a minute's bucket paced by a hidden short one by its ``reset``
        #: (:func:`short_bucket_fill`); off where the headers come one per lease of many calls
        self.hidden_bucket = hidden_bucket

    def _bucket(
        self, per_minute: float | None, now: float, level: float, unit: float = 1.0
    ) -> TokenBucket | None:
        if per_minute is None:
            return None
        rate = per_minute / 60.0
        bucket = TokenBucket(rate, self._capacity(rate, unit), now)
        bucket.level = min(bucket.capacity, level)  # nearly empty: no burst on top of the rate
        return bucket

    def _capacity(self, rate: float, unit: float) -> float:
        """The largest single take (one request; the largest call's tokens) plus ``burst``
        seconds of the rate: a wake-up a few milliseconds late is caught up, a lull is not."""
        return unit + rate * self.burst

    # -- before and after a call ---------------------------------------------------------------

    async def acquire(self, tokens: int, requests: int = 1) -> Reservation:
        """Wait for the gate, the slow-start probe, ``requests`` requests (one call: 1; a Ray
        worker leases blocks of several) and ``tokens`` tokens; take them.

        Raises :class:`TooLarge` (the item fails) for a call above the whole tokens/min limit.
        The time spent waiting is split into ``cooldown_wait`` (while the gate was closed by a
        429) and ``limiter_wait`` (the probe and the budgets).
        """
        self._check_size(tokens)
        if tokens > self._largest:
            self._largest = tokens
            if self.tokens is not None:
                self.tokens.capacity = self._capacity(self.tokens.rate, tokens)
        reservation = Reservation(tokens=tokens)
        started = self.clock.now()
        self.waiting += 1
        try:
            await self._admit(reservation, tokens, requests)
        finally:
            self.waiting -= 1
        now = self.clock.now()
        self.share.sent(now, requests)
        self.sent += 1
        self.first_sent = now if self.first_sent is None else self.first_sent
        self.last_sent = now
        waited = now - started
        reservation.cooldown_wait = min(waited, max(0.0, self.reopen_at - started))
        reservation.limiter_wait = waited - reservation.cooldown_wait
        return reservation

    async def _admit(self, reservation: Reservation, tokens: int, requests: int) -> None:
        """Wait, in turn, until the gate, the probe and the budgets let this call go; take."""
        async with self._lock:  # FIFO: calls are served in the order they asked
            while True:
                now = self.clock.now()
                if now < self.reopen_at:
                    await self.clock.sleep(self.reopen_at - now + self._jitter)
                    continue
                if self.probing and self.probes_out >= self.probe:
                    self._probe_back.clear()
                    await self._probe_back.wait()
                    continue
                wait = max(
                    self.requests.wait_for(requests, now) if self.requests else 0.0,
                    self.tokens.wait_for(tokens, now) if self.tokens else 0.0,
                    self._window_wait(now),
                )
                if wait <= 0:
                    wait = self._group_wait()
                if wait <= 0:
                    break
                await self.clock.sleep(wait)
            self._check_size(tokens)  # a limit learned meanwhile
            now = self.clock.now()
            if self.probing:
                reservation.probe = True
                self.probes_out += 1
                self.probes += 1
            if self.requests:
                self.requests.take(requests, now)
                self._window.extend([now] * requests)
            if self.tokens:
                self.tokens.take(tokens, now)
            reservation.metered = self.requests is not None or self.tokens is not None
            reservation.sent_at = now

    def admit_wait(self, tokens: int = 0) -> float | None:
        """About how many seconds a call asking now would wait, behind the calls already
        waiting (None: not known yet, while the slow-start probe is out). Takes nothing.

        A route's ``spill`` policy asks this to send a call elsewhere *before* this model is
        refused: a full limiter says so, a 429 is not needed."""
        now = self.clock.now()
        if self.probing:
            return 0.0 if self.probes_out + self.waiting < self.probe else None
        wait = max(0.0, self.reopen_at - now)
        ahead = self.waiting + 1
        for bucket, amount in ((self.requests, float(ahead)), (self.tokens, float(ahead * tokens))):
            if bucket is not None and amount > 0:
                bucket.refill(now)
                wait = max(wait, (amount - bucket.level) / bucket.rate)
        return max(0.0, wait)

    def achieved_rpm(self) -> float | None:
        """Requests/min from the first call to the last (None: under a second of calls)."""
        span = self.last_sent - self.first_sent if self.first_sent is not None else 0.0
        return self.sent / span * 60 if span >= 1.0 else None

    def achieved_tpm(self) -> float | None:
        span = self.last_sent - self.first_sent if self.first_sent is not None else 0.0
        return self.used_tokens / span * 60 if span >= 1.0 and self.used_tokens else None

    def _window_wait(self, now: float, requests: int = 1) -> float:
        """Seconds until this process may send without more than the window allows: the bucket
        may catch up a late wake-up, but never past what a strict 1-second window takes.

        The guard allows ``cap`` sends in any ``span`` seconds: ``cap`` is what the server's
        second holds (``floor(limit / 60)``, the limit as told or stated, before headroom and
        share: 1,200/min gives 20), or fewer for a lower rate, and ``span`` is at least a second
        and otherwise ``cap / rate``. So the guard never lets more than the rate out over a span
        (a rate of 19.6/s: 20 in any 1.02 s, 20 ms to spare for the calls' way to the server),
        and a rate that is a fraction of the limit (a share of a key, 9.8/s) is not rounded down
        to whole calls a second (9, 8% less, as a cap of ``floor(rate)`` a second did).
        (A block larger than ``cap`` waits for an empty window.)"""
        if self.requests is None or requests <= 0:
            return 0.0
        cap, span = self._window_shape()
        while self._window and self._window[0] <= now - span:
            self._window.popleft()
        allowed = max(0, cap - min(requests, cap))  # sends the window may already hold
        if len(self._window) <= allowed:
            return 0.0
        return self._window[len(self._window) - allowed - 1] + span - now

    def _window_shape(self) -> tuple[int, float]:
        """The window guard's (cap, span): see :meth:`_window_wait`."""
        assert self.requests is not None
        rate = self.requests.rate
        stated = [x for x in (self.told_rpm, self.server_rpm) if x is not None]
        limit = min(stated) if stated else rate * 60.0
        second = max(1, math.floor(limit / 60.0 + 1e-9))
        cap = max(1, min(second, math.ceil(rate - 1e-9)))
        return cap, max(1.0, cap / rate)

    def _group_wait(self) -> float:
        """0 when the limit group (if any) gave this call a request, else how long to wait."""
        if self.group is None or self.limit_rpm is None:
            return 0.0
        group, model = self.group
        return group.take(model, per_minute=self.limit_rpm * self.share.factor)

    def _check_size(self, tokens: int) -> None:
        limit = self.server_tpm or self.told_tpm
        if limit is not None and tokens > limit:
            raise TooLarge(
                f"this call needs about {tokens:,} tokens (prompt + max_tokens), more than the "
                f"tokens/min limit of {int(limit):,} allows in a whole minute: it can never be "
                "sent; shorten the prompt or lower max_tokens"
            )

    def settle(self, reservation: Reservation, used_tokens: int | None) -> None:
        """Refund the tokens a call reserved but did not use (or charge the excess)."""
        self._probe_done(reservation)
        now = self.clock.now()
        self.share.answered(now)
        self._apply_share(now)
        self.used_tokens += used_tokens or 0
        if self.tokens is None or used_tokens is None:
            return
        difference = reservation.tokens - used_tokens
        if difference > 0:
            self.tokens.give(difference, now)
        elif difference < 0:
            self.tokens.take(-difference, now)

    def release(self, reservation: Reservation) -> None:
        """A call that was refused before it ran (e.g. a 429): it used none of its tokens."""
        self._probe_done(reservation)
        if self.tokens is not None:
            self.tokens.give(reservation.tokens, self.clock.now())

    def failed(self, reservation: Reservation) -> None:
        """A call that failed otherwise (a 500, a timeout): its tokens stay spent."""
        self._probe_done(reservation)

    def refused(self, reservation: Reservation, wait: float) -> None:
        """A 429: give the tokens back, close the gate for ``wait`` and, when our own
        accounting was under the limit, take it as a sign that another job uses the key."""
        self.release(reservation)
        if reservation.metered and self.share.refused(self.clock.now(), sent_at=reservation.sent_at):
            self._apply_share(self.clock.now())
        self.cooldown(wait)

    def _probe_done(self, reservation: Reservation) -> None:
        if reservation.probe:
            reservation.probe = False
            self.probes_out -= 1
            self._probe_back.set()

    # -- what the server says --------------------------------------------------------------------

    def cooldown(self, seconds: float) -> None:
        """Close the gate for ``seconds`` (a 429): every caller of this model waits."""
        until = self.clock.now() + max(0.0, seconds)
        if until > self.reopen_at:
            self.reopen_at = until
            self.cooldowns += 1
            # the first caller wakes a little late, so jobs sharing the key do not all come back
            # at once; in proportion to the wait (a strict window's 30 ms is not worth 0.5 s)
            self._jitter = self.rng.uniform(0, min(self.wake_jitter, 0.05 + 0.5 * seconds))
        # What was left in our buckets was evidently not there on the server's side. Empty
        # them as of the reopening, so the calls queued behind the gate flow out at the
        # sustained rate instead of all at once.
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.refill(self.clock.now())
                bucket.level = min(bucket.level, 0.0)
                bucket.updated = max(bucket.updated, self.reopen_at)

    def observe(self, info: RateLimitInfo) -> None:
        """Correct the limits and the buckets from a response's rate-limit headers; the first
        response ends slow start (with limits learned, or none if the server said nothing)."""
        now = self.clock.now()
        bucket = short_bucket_fill(info, hidden=self.hidden_bucket)
        if info.limit_requests:
            self.server_rpm = info.limit_requests
            if info.remaining_requests is not None and bucket is None:
                # (a short bucket's remaining is its level, not the minute's count: read as a
                # window it shows others using nearly all of the key, and every job fell to a
                # tenth of it at its first 429)
                self.share.observe(info.limit_requests, info.remaining_requests, now)
        if info.limit_tokens:
            self.server_tpm = info.limit_tokens
        self._learn_limits(now)
        if self.probing:
            self.probing = False
            self._probe_back.set()
        if bucket is None:
            self._sync(self.requests, info.remaining_requests, now)
            self._sync(self.tokens, info.remaining_tokens, now)
        elif self.share.low_bucket(bucket[0], now, limit=info.limit_requests or 0, lacks=bucket[1]):
            self._apply_share(now)

    def _learn_limits(self, now: float) -> None:
        """The limits that hold: the told ones, lowered to the server's when it states less."""
        rpm = _lower(self.told_rpm, self.server_rpm, self.headroom)
        tpm = _lower(self.told_tpm, self.server_tpm, self.headroom)
        self.limit_rpm, self.limit_tpm = rpm, tpm
        self._apply_share(now)

    def _apply_share(self, now: float) -> None:
        """Set the buckets' rates to the limits times our share of the key."""
        factor = self.share.factor
        self.requests = self._rate(self.requests, self.limit_rpm, factor, now, 1.0)
        self.tokens = self._rate(self.tokens, self.limit_tpm, factor, now, float(self._largest))

    def _rate(
        self, bucket: TokenBucket | None, limit: float | None, factor: float, now: float, unit: float
    ) -> TokenBucket | None:
        if limit is None:
            return bucket
        rate = limit * factor / 60.0
        capacity = self._capacity(rate, unit)
        if bucket is None:
            return self._bucket(limit * factor, now, 0.0, unit)  # learned: the probe spent the first
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


def _lower(told: float | None, server: int | None, headroom: float) -> float | None:
    """The told limit, or the server's (with headroom) when it states less or we were not told."""
    if server is None:
        return told
    learned = server * headroom
    if told is None or learned < told * headroom:
        return learned
    return told


#: a server bucket that is full again within this many seconds is a short bucket
SHORT_BUCKET_SECONDS = 3.0
#: the size (seconds of the limit) taken for a short bucket the headers do not show
HIDDEN_BUCKET_SECONDS = 1.0


def short_bucket_fill(info: RateLimitInfo, *, hidden: bool = True) -> tuple[float, float] | None:
    """How full the server's bucket is (0-1), and how many requests it lacks, when the headers
    describe a bucket that is full again within a few seconds; None for a minute's window, or
    a bucket that takes longer (then ``remaining`` counts the minute).

    Two kinds are read so:

    - a provider's own short limiter (``remaining`` is the level of a bucket of a second or two
      refilled within ``reset`` seconds, and says nothing of the minute);
    - a bucket of a minute's worth paced by a short one (the sim server's default model: a
      request must fit both, ``remaining`` is the minute bucket's level, about the limit, and
      ``reset`` is the time the short one needs). Its level says a minute, but what binds is
      the short bucket, whose size the headers do not give: ``reset`` (the seconds of the limit
      it lacks) is the signal, against a bucket of ``HIDDEN_BUCKET_SECONDS``. Read as a
      window, the level showed nobody else on the key, and 4 jobs drew 16-18% 429s. Without
      ``hidden`` this kind reads as a minute's window (None), as a limiter that does not see
      each of its calls' own headers needs (see :class:`ModelLimiter`'s ``hidden_bucket``)."""
    limit, remaining, reset = info.limit_requests, info.remaining_requests, info.reset_requests
    if not limit or remaining is None or reset is None or reset > SHORT_BUCKET_SECONDS:
        return None
    rate = limit / 60
    lacks = reset * rate
    seconds = (remaining + lacks) / rate
    if seconds <= 0:
        return None
    if seconds > SHORT_BUCKET_SECONDS:
        if not hidden:
            return None
        seconds = HIDDEN_BUCKET_SECONDS
    return max(0.0, 1.0 - reset / seconds), lacks
