"""The third limiter model: a bucket of about a second, whose ``remaining`` is its level."""

from __future__ import annotations

import math

import pytest

from chainfleet.sim.call import Call, Failure
from chainfleet.sim.limits import RateLimits, openai_limit_headers
from chainfleet.sim.settings import SimServerSettings
from chainfleet.sim.shortbucket import SecondBucket


def test_the_bucket_holds_a_second_and_refills_at_the_minute_rate() -> None:
    now = [0.0]
    bucket = SecondBucket(1200, seconds=1, clock=lambda: now[0])
    assert bucket.remaining == 20 and bucket.limit == 1200
    for _ in range(20):
        assert bucket.wait(1) == 0.0
        bucket.take(1)
    assert bucket.remaining == 0
    assert bucket.wait(1) == pytest.approx(0.05)
    now[0] += 0.5  # half a second refills 10
    assert bucket.remaining == 10
    assert bucket.time_to_full() == pytest.approx(0.5)
    now[0] += 60  # it never holds more than a second's worth
    assert bucket.remaining == 20


def test_a_minute_at_the_rate_is_admitted_and_a_burst_is_not() -> None:
    now = [0.0]
    bucket = SecondBucket(600, seconds=1, clock=lambda: now[0])  # 10 a second
    admitted = 0
    for step in range(600):  # 600 requests evenly over 60 s: every one fits
        now[0] = step * 0.1
        if bucket.wait(1) == 0:
            bucket.take(1)
            admitted += 1
    assert admitted == 600
    burst = sum(1 for _ in range(50) if bucket.wait(1) == 0 and bucket.take(1))
    assert burst <= 10  # unlike the minute bucket, no minute's worth is saved up


def test_one_request_above_the_bucket_is_admitted_when_full_and_above_the_limit_never() -> None:
    now = [0.0]
    bucket = SecondBucket(60_000, seconds=1, clock=lambda: now[0])  # 1,000 tokens a second
    assert bucket.wait(5_000) == 0.0
    bucket.take(5_000)
    assert bucket.remaining == 0 and bucket.wait(1) > 4  # in debt
    assert math.isinf(bucket.wait(60_001))


def test_the_headers_report_the_buckets_level_and_the_limits_refuse_with_429s() -> None:
    now = [0.0]
    limits = RateLimits(1200, None, bucket_seconds=1, clock=lambda: now[0])
    call = Call("gpt-4o-mini", None, "hello", max_tokens=10)
    for _ in range(20):
        limits.admit(call)
    headers = openai_limit_headers(limits)
    assert headers["x-ratelimit-limit-requests"] == "1200"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(Failure) as refused:
        limits.admit(call)
    assert refused.value.kind == "rate_requests"


def test_window_and_bucket_seconds_are_one_or_the_other() -> None:
    with pytest.raises(ValueError, match="two limiter models"):
        SimServerSettings(rpm=60, window=1, bucket_seconds=1)
