"""Gateways between chainfleet and the provider (LiteLLM, OpenRouter, Azure OpenAI, Portkey):
their spellings of the wait and the limits, an unknown model said with a 400, and what the
report says about the limits that held. (A LiteLLM-like gateway on a real port:
tests/e2e/test_gateways.py.)"""

from __future__ import annotations

import pytest

from chainfleet import ModelNotFound
from chainfleet.clock import VirtualClock
from chainfleet.errors import InvalidRequest
from chainfleet.limits.facts import limit_facts, limit_lines
from chainfleet.limits.headers import parse_rate_limits, parse_retry_after
from chainfleet.limits.limiter import ModelLimiter
from chainfleet.providers._errors import classify

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"llm_provider-retry-after": "3"}, 3.0),  # LiteLLM's 429 may carry only this
        ({"llm_provider-retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250"}, 0.25),  # Azure OpenAI, passed on by Portkey
        ({"Retry-After-Ms": "2000", "retry-after": "9"}, 2.0),  # milliseconds first
        ({"X-RateLimit-Reset": str(int((NOW + 4) * 1000))}, 4.0),  # OpenRouter: epoch ms
        ({"retry-after": "Fri, 15 Jan 2027 08:00:07 GMT"}, None),  # an HTTP date, checked below
    ],
)
def test_every_gateways_spelling_of_the_wait_is_read(headers: dict[str, str], wait: float | None) -> None:
    got = parse_retry_after(headers, NOW)
    if wait is None:
        assert got is not None and got >= 0
    else:
        assert got == pytest.approx(wait)


def test_litellms_forwarded_limits_teach_the_limiter_and_azures_minus_one_is_not_a_limit() -> None:
    info = parse_rate_limits(
        {
            "llm_provider-x-ratelimit-limit-requests": "500",
            "llm_provider-x-ratelimit-remaining-requests": "499",
            "x-ratelimit-limit-tokens": "-1",
        },
        NOW,
    )
    assert info.limit_requests == 500 and info.remaining_requests == 499
    assert info.limit_tokens is None


@pytest.mark.parametrize(
    "message",
    [
        "Invalid model name passed in model=gpt-5-turbo-x. Call `/v1/models` to view available models",
        "The model `gpt-nope` does not exist or you do not have access to it.",
        "model 'llama9' not found, try pulling it first",
        "gpt-nope is not a valid model ID",
    ],
)
def test_an_unknown_model_said_with_a_400_is_fatal(message: str) -> None:
    assert isinstance(classify(400, message), ModelNotFound)


def test_other_400s_stay_a_failure_of_the_item() -> None:
    error = classify(400, "This model's maximum context length is 128000 tokens.")
    assert type(error) is InvalidRequest


def test_the_report_says_which_limit_held_and_that_the_server_held_less_than_told() -> None:
    limiter = ModelLimiter(rpm=1500, clock=VirtualClock())
    limiter.observe(parse_rate_limits({"x-ratelimit-limit-requests": "1200"}, NOW))
    facts = limit_facts(limiter)
    assert facts["learned_from"] == "told, lowered to the server's headers"
    lines = limit_lines({"openai:gpt-4o-mini": facts})
    assert "openai:gpt-4o-mini: told 1,500/min; the server held 1,200" in lines


def test_the_report_says_another_job_shares_the_key() -> None:
    limiter = ModelLimiter(rpm=1200, clock=VirtualClock())
    share = limiter.share
    for t in range(100):
        share.sent(t * 0.1)
    # the server counted 200 in its minute: 100 of them were not ours
    share.observe(limit=1200, remaining=1000, now=10.0)
    facts = limit_facts(limiter)
    assert facts["shared"] is True and facts["others_pct"] == 50.0
    [line] = [line for line in limit_lines({"m": facts}) if "shares" in line]
    assert line.startswith("m: another job shares this key: others took about 50% of the requests")
