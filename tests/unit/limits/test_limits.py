"""The per-model limiter, on a virtual clock: no test sleeps for real."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chainfleet.clock import VirtualClock
from chainfleet.limits.adaptive import AdaptiveConcurrency
from chainfleet.limits.headers import RateLimitInfo
from chainfleet.limits.limiter import ModelLimiter, TokenBucket
from chainfleet.limits.tokens import estimate_tokens


def on_clock(clock: VirtualClock, make: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        return await clock.run(make())

    return asyncio.run(main())


def test_bucket_refills_continuously_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=2.0, capacity=4.0, now=0.0)
    bucket.take(4, now=0.0)
    assert bucket.wait_for(1, now=0.0) == pytest.approx(0.5)
    assert bucket.wait_for(1, now=0.5) == 0.0
    bucket.refill(now=100.0)
    assert bucket.level == 4.0


def test_an_oversized_request_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    bucket = TokenBucket(rate=10.0, capacity=10.0, now=0.0)
    bucket.take(10, now=0.0)
    assert bucket.wait_for(50, now=0.0) == pytest.approx(1.0)
    bucket.take(50, now=1.0)
    assert bucket.wait_for(1, now=1.0) == pytest.approx(4.1)


def test_requests_per_minute_are_spread_not_burst() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(rpm=600, clock=clock)  # 10 a second
    times: list[float] = []

    async def main() -> None:
        async def one() -> None:
            await limiter.acquire(tokens=0)
            times.append(clock.now())

        await asyncio.gather(*(one() for _ in range(100)))

    on_clock(clock, main)
    # 100 requests at 10/s from a nearly empty bucket (one request, no burst on top of the
    # rate, issue 13): the last one goes at 9.9 s, never faster
    assert times[-1] == pytest.approx(9.9, abs=0.01)
    # every gap is the rate's: k requests after one, at least k / 10 seconds have passed
    for i in range(len(times)):
        for k in range(1, len(times) - i):
            assert times[i + k] - times[i] >= k / 10 - 1e-9


def test_tokens_per_minute_bind_before_requests_when_prompts_are_long() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(rpm=6000, tpm=60_000, clock=clock)  # 1,000 tokens a second

    async def main() -> float:
        for _ in range(10):
            await limiter.acquire(tokens=500)
        return clock.now()

    # 5,000 tokens at 1,000/s from a nearly empty bucket (1 token): 5 s less a millisecond
    assert on_clock(clock, main) == pytest.approx(4.999)


def test_settling_refunds_unused_tokens() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(tpm=60_000, clock=clock)

    async def main() -> tuple[float, float]:
        reservation = await limiter.acquire(tokens=1000)
        assert limiter.tokens is not None
        before = limiter.tokens.level
        limiter.settle(reservation, used_tokens=300)
        return before, limiter.tokens.level

    before, after = on_clock(clock, main)
    assert after - before == pytest.approx(700)


def test_a_429_closes_the_gate_for_every_caller_and_they_wake_spread_out() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(rpm=6000, clock=clock, rng=random.Random(1), wake_jitter=0.5)
    woke: list[float] = []
    cooled: list[float] = []

    async def main() -> None:
        limiter.cooldown(10.0)

        async def one() -> None:
            reservation = await limiter.acquire(tokens=0)
            woke.append(clock.now())
            cooled.append(reservation.cooldown_wait)

        await asyncio.gather(*(one() for _ in range(20)))

    on_clock(clock, main)
    assert min(woke) >= 10.0
    assert all(wait == pytest.approx(10.0) for wait in cooled)  # every caller waited on the gate
    # after the gate they go at the sustained rate (100/s), not all at the same instant
    # (the first waits out a random jitter, during which the bucket refills a little)
    assert max(woke) - min(woke) >= 0.1
    assert limiter.cooldowns == 1


def test_headers_teach_an_untold_limiter_its_limits() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(clock=clock, headroom=1.0)
    assert limiter.requests is None and limiter.limit_rpm is None
    limiter.observe(RateLimitInfo(limit_requests=120, remaining_requests=119, limit_tokens=60_000))
    assert limiter.limit_rpm == 120 and limiter.limit_tpm == 60_000
    assert limiter.requests is not None and limiter.requests.rate == pytest.approx(2.0)


def test_headers_do_not_override_limits_the_user_gave() -> None:
    limiter = ModelLimiter(rpm=60, clock=VirtualClock())
    limiter.observe(RateLimitInfo(limit_requests=10_000, remaining_requests=9_999))
    assert limiter.limit_rpm == 60


def test_the_server_having_less_left_lowers_our_budget() -> None:
    clock = VirtualClock()
    limiter = ModelLimiter(rpm=600, clock=clock)
    limiter.observe(RateLimitInfo(limit_requests=600, remaining_requests=0))

    async def main() -> float:
        await limiter.acquire(tokens=0)
        return clock.now()

    assert on_clock(clock, main) == pytest.approx(0.1)


def test_estimates_are_about_four_characters_a_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a" * 400, model="claude-sonnet-4-5") == 100
    assert estimate_tokens("hello world", model="llama3") == 3


def test_adaptive_concurrency_grows_on_success_and_halves_on_overload() -> None:
    async def main() -> tuple[float, float]:
        adaptive = AdaptiveConcurrency(cap=64, start=4)
        for _ in range(200):
            await adaptive.acquire()
            await adaptive.observe(ok=True, overloaded=False, latency=1.0)
            await adaptive.release()
        grown = adaptive.limit
        await adaptive.observe(ok=False, overloaded=True, latency=None)
        await adaptive.observe(ok=False, overloaded=True, latency=None)  # same burst: no 2nd cut
        return grown, adaptive.limit

    grown, after = asyncio.run(main())
    assert 15 < grown <= 64
    assert after == pytest.approx(grown * 0.8)  # the default multiplicative decrease


def test_adaptive_concurrency_backs_off_when_latency_rises_and_respects_its_cap() -> None:
    async def main() -> tuple[float, float]:
        adaptive = AdaptiveConcurrency(cap=8, start=8)
        await adaptive.observe(ok=True, overloaded=False, latency=1.0)
        capped = adaptive.limit
        await adaptive.observe(ok=True, overloaded=False, latency=5.0)
        return capped, adaptive.limit

    capped, slowed = asyncio.run(main())
    assert capped == 8
    assert slowed == pytest.approx(8 * 0.8)


def test_adaptive_slots_hold_back_chains_beyond_the_limit() -> None:
    async def main() -> list[int]:
        adaptive = AdaptiveConcurrency(cap=10, start=2)
        seen: list[int] = []

        async def chain() -> None:
            await adaptive.acquire()
            seen.append(adaptive.in_flight)
            await asyncio.sleep(0)
            await adaptive.release()

        await asyncio.gather(*(chain() for _ in range(10)))
        return seen

    assert max(asyncio.run(main())) == 2
