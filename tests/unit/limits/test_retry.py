"""Retry policy: which failures are retried, how long to wait, and which items get another pass."""

from __future__ import annotations

import dataclasses
import random

import pytest

from chainfleet.errors import (
    AuthFailed,
    CallError,
    ConnectionFailed,
    ContentFiltered,
    InvalidOutput,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    ServerError,
    Timeout,
)
from chainfleet.limits.retry import RetryPolicy, retry_in_next_pass

TRANSIENT: list[CallError] = [
    RateLimited("429 too many requests", status=429),
    Overloaded("529 overloaded", status=529),
    ServerError("500 internal error", status=500),
    Timeout("no answer in 60 s"),
    ConnectionFailed("connection reset by peer"),
]
PERMANENT: list[CallError] = [
    InvalidRequest("400 context too long", status=400),
    ContentFiltered("refused by the content filter"),
    InvalidOutput("quality gate: fewer than 3 words"),
]
FATAL: list[CallError] = [
    AuthFailed("401 invalid api key", status=401),
    ModelNotFound("404 model not found", status=404),
    QuotaExhausted("insufficient_quota"),
]


def name(error: object) -> str:
    return type(error).__name__


# -- should_retry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", TRANSIENT, ids=name)
def test_transient_errors_are_retried_until_max_attempts(error: CallError) -> None:
    policy = RetryPolicy(max_attempts=4)
    assert [policy.should_retry(error, attempt) for attempt in (1, 2, 3, 4, 5)] == [
        True,
        True,
        True,
        False,
        False,
    ]


@pytest.mark.parametrize("error", PERMANENT + FATAL, ids=name)
def test_permanent_and_fatal_errors_are_never_retried(error: CallError) -> None:
    policy = RetryPolicy(max_attempts=10)
    assert not any(policy.should_retry(error, attempt) for attempt in range(1, 11))


def test_errors_of_other_kinds_are_not_retried() -> None:
    policy = RetryPolicy()
    assert not policy.should_retry(ValueError("a bug"), 1)
    assert not policy.should_retry(CallError("unclassified"), 1)


def test_one_attempt_means_no_retry() -> None:
    policy = RetryPolicy(max_attempts=1)
    assert not policy.should_retry(RateLimited("429"), 1)


# -- backoff ---------------------------------------------------------------------------------------


def test_backoff_without_jitter_doubles_from_one_second() -> None:
    policy = RetryPolicy(jitter=False, cap=1000.0)
    assert [policy.backoff(attempt) for attempt in range(1, 9)] == [1, 2, 4, 8, 16, 32, 64, 128]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(jitter=False, cap=10.0)
    assert [policy.backoff(attempt) for attempt in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]


def test_backoff_scales_with_base() -> None:
    policy = RetryPolicy(jitter=False, base=0.5, cap=60.0)
    assert [policy.backoff(attempt) for attempt in range(1, 5)] == [0.5, 1, 2, 4]


def test_backoff_stays_at_the_cap_however_many_attempts() -> None:
    # a user may allow many attempts (`--max-attempts 2000`); 2 ** 1999 overflows a float
    policy = RetryPolicy(max_attempts=5000, jitter=False, cap=30.0)
    assert policy.backoff(2000) == 30.0
    jittered = RetryPolicy(max_attempts=5000, cap=30.0)
    assert 0 <= jittered.backoff(2000, random.Random(0)) <= 30.0


@pytest.mark.parametrize(("attempt", "bound"), [(1, 1.0), (3, 4.0), (5, 16.0), (12, 20.0)])
def test_jittered_backoff_stays_within_zero_and_the_bound(attempt: int, bound: float) -> None:
    policy = RetryPolicy(cap=20.0)
    rng = random.Random(1234)
    draws = [policy.backoff(attempt, rng) for _ in range(2000)]
    assert all(0 <= d <= bound for d in draws)
    assert len(set(draws)) > 1000
    # full jitter: the draws spread over the whole range, not bunched at one end
    assert min(draws) < bound * 0.05 and max(draws) > bound * 0.95


def test_jitter_is_reproducible_with_a_seeded_random() -> None:
    policy = RetryPolicy()
    first = [policy.backoff(3, rng) for rng in [random.Random(7)] for _ in range(20)]
    second = [policy.backoff(3, rng) for rng in [random.Random(7)] for _ in range(20)]
    assert first == second


def test_jitter_without_a_random_still_stays_within_the_bound() -> None:
    policy = RetryPolicy(cap=60.0)
    assert all(0 <= policy.backoff(4) <= 8.0 for _ in range(200))


# -- wait ------------------------------------------------------------------------------------------


def test_wait_uses_the_servers_retry_after() -> None:
    policy = RetryPolicy()
    error = RateLimited("429 too many requests", retry_after=7.5, status=429)
    assert policy.wait(error, 1, random.Random(0)) == 7.5
    assert policy.wait(error, 3, random.Random(0)) == 7.5


def test_wait_honours_a_retry_after_of_zero() -> None:
    policy = RetryPolicy(jitter=False)
    assert policy.wait(Overloaded("503", retry_after=0.0), 3) == 0.0


def test_wait_falls_back_to_backoff_without_retry_after() -> None:
    policy = RetryPolicy(jitter=False, cap=60.0)
    assert [policy.wait(ServerError("500"), attempt) for attempt in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert policy.wait(Timeout("slow"), 4) == 8


def test_wait_without_retry_after_is_jittered_backoff() -> None:
    policy = RetryPolicy(cap=60.0)
    rng = random.Random(99)
    waits = [policy.wait(RateLimited("429"), 3, rng) for _ in range(500)]
    assert all(0 <= w <= 4.0 for w in waits)
    assert len(set(waits)) > 1


# -- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -3}, "max_attempts"),
        ({"base": -1.0}, "negative"),
        ({"cap": -1.0}, "negative"),
    ],
)
def test_invalid_settings_are_rejected(settings: dict[str, float], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        RetryPolicy(**settings)  # type: ignore[arg-type]


def test_a_policy_is_a_frozen_keyword_only_value() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy == RetryPolicy(max_attempts=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[call-arg]


# -- retry_in_next_pass ----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [*TRANSIENT, InvalidOutput("quality gate: too short")], ids=name)
def test_transient_failures_and_invalid_outputs_get_another_pass(error: CallError) -> None:
    assert retry_in_next_pass(error)


@pytest.mark.parametrize(
    "error",
    [InvalidRequest("400 context too long"), ContentFiltered("refused"), *FATAL],
    ids=name,
)
def test_rejected_requests_and_fatal_errors_get_no_other_pass(error: CallError) -> None:
    assert not retry_in_next_pass(error)
