"""Reading waits and limits from provider headers and error text, in every format met."""

from __future__ import annotations

import pytest

from chainfleet.limits.headers import (
    parse_duration,
    parse_rate_limits,
    parse_retry_after,
    parse_try_again,
    retry_after_from,
)

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("1.5s", 1.5),
        ("1h2m3.5s", 3723.5),
        ("20", 20.0),
        ("0.25", 0.25),
        ("250us", 0.00025),
    ],
)
def test_go_durations_and_plain_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "1x"])
def test_unreadable_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}, NOW) == 1.5


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert parse_retry_after({"Retry-After": "7"}, NOW) == 7.0
    assert parse_retry_after({"retry-after": "Fri, 15 Jan 2027 08:00:30 GMT"}, NOW) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": "Fri, 15 Jan 2027 07:59:00 GMT"}, NOW) == 0.0
    assert parse_retry_after({}, NOW) is None
    assert parse_retry_after({"retry-after": "later"}, NOW) is None


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Rate limit reached for requests. Please try again in 3.89s.", 3.89),
        ("Please try again in 120ms.", 0.12),
        ("try again in 1m30s", 90.0),
        ("Please try again in 20 seconds.", 20.0),
        ("Please try again in 2s", 2.0),
    ],
)
def test_the_wait_in_an_error_message(message: str, seconds: float) -> None:
    assert parse_try_again(message) == pytest.approx(seconds)


def test_a_message_without_a_wait() -> None:
    assert parse_try_again("You exceeded your current quota") is None


def test_headers_first_then_the_message() -> None:
    assert retry_after_from({"retry-after": "4"}, "try again in 9s", NOW) == 4.0
    assert retry_after_from({}, "try again in 9s", NOW) == 9.0
    assert retry_after_from({}, "slow down", NOW) is None


def test_openai_rate_limit_headers() -> None:
    info = parse_rate_limits(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "198500",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        NOW,
    )
    assert (info.limit_requests, info.remaining_requests) == (500, 499)
    assert info.reset_requests == pytest.approx(0.12)
    assert (info.limit_tokens, info.remaining_tokens) == (200000, 198500)
    assert info.reset_tokens == pytest.approx(360.0)
    assert not info.empty


def test_anthropic_rate_limit_headers_with_rfc3339_resets() -> None:
    info = parse_rate_limits(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2027-01-15T08:00:02Z",
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "39000",
            "anthropic-ratelimit-tokens-reset": "2027-01-15T08:00:01.500000+00:00",
        },
        NOW,
    )
    assert (info.limit_requests, info.remaining_requests) == (50, 49)
    assert info.reset_requests == pytest.approx(2.0)
    assert info.reset_tokens == pytest.approx(1.5)


def test_no_rate_limit_headers_is_empty() -> None:
    assert parse_rate_limits({"content-type": "application/json"}, NOW).empty
