"""``chainfleet sim-server`` as its clients meet it: the official SDKs and plain HTTP over loopback.

Each test starts a real server on a free 127.0.0.1 port (in-process, in its own event loop) and
talks to it with ``openai.AsyncOpenAI`` / ``anthropic.AsyncAnthropic`` (``max_retries=0``) or
httpx where the SDK hides the wire. The rate-limit arithmetic is tested on an injected clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx2 as httpx
import openai
import pytest

import chainfleet.cli.simserver  # noqa: F401 - registers the command
from chainfleet.sim.call import completion_key
from chainfleet.sim.server import SimServer, SimServerThread
from chainfleet.sim.settings import SimServerSettings
from chainfleet.sim.text import count_tokens, marker_line

T = TypeVar("T")

KEY = "sk-sim-test-key-0123456789"

SYSTEM = "You are a meticulous research agent."

PROMPT = "Research the history of tea: the key facts, figures and open questions."

MODEL = "gpt-4o-mini"

CLAUDE = "claude-sim-test"  # not a real model: the SDK warns about deprecated names


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy and no real endpoint or key from the environment can come into play."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def serve(body: Callable[[SimServer], Awaitable[T]], **settings: Any) -> T:
    """Run ``body(sim)`` against a fresh server with these settings, in a new event loop."""
    clock = settings.pop("clock", time.monotonic)

    async def main() -> T:
        async with SimServer(SimServerSettings(**settings), clock=clock) as sim:
            return await body(sim)

    return asyncio.run(main())


def openai_client(sim: SimServer, *, api_key: str = KEY, timeout: float = 10) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key=api_key, max_retries=0, timeout=timeout)


def anthropic_client(sim: SimServer, *, api_key: str = KEY, timeout: float = 10) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sim.url, api_key=api_key, max_retries=0, timeout=timeout)


def chat_body(prompt: str = PROMPT, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    return {"model": MODEL, "messages": messages, **extra}


def messages_body(prompt: str = PROMPT, **extra: Any) -> dict[str, Any]:
    body = {"model": CLAUDE, "max_tokens": 400, "system": SYSTEM}
    return {**body, "messages": [{"role": "user", "content": prompt}], **extra}


OPENAI_HEADERS = {"Authorization": f"Bearer {KEY}"}

ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


async def post_chat(
    http: httpx.AsyncClient, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.post(
        "/v1/chat/completions", json=body, headers=OPENAI_HEADERS if headers is None else headers
    )


async def post_messages(
    http: httpx.AsyncClient, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.post(
        "/v1/messages", json=body, headers=ANTHROPIC_HEADERS if headers is None else headers
    )


def http_client(sim: SimServer, timeout: float = 10) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sim.url, timeout=timeout)


_GO = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?$|^(\d+)ms$")


def parse_go(text: str) -> float:
    """Seconds from a Go duration such as ``6m0s``, ``1.5s`` or ``120ms`` (fails on anything else)."""
    match = _GO.match(text)
    assert match and text, f"not a Go duration: {text!r}"
    hours, minutes, seconds, ms = match.groups()
    if ms is not None:
        return int(ms) / 1000
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def assert_openai_error(response: httpx.Response, status: int, kind: str, code: str | None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["type"], body["error"]["code"], body["error"]["param"]) == (kind, code, None)
    assert body["error"]["message"]
    return str(body["error"]["message"])


def assert_anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind
    assert response.headers["request-id"]
    return str(body["error"]["message"])


# -- answers -----------------------------------------------------------------------------------


def test_openai_sdk_gets_a_deterministic_simulated_answer_with_true_usage() -> None:
    async def scenario(sim: SimServer) -> None:
        async with openai_client(sim) as client:
            messages: Any = chat_body()["messages"]
            first = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=300)
            again = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=300)

        text = first.choices[0].message.content
        assert text is not None and text.startswith(marker_line(7))
        assert "history of tea" in text
        assert again.choices[0].message.content == text
        assert first.id.startswith("chatcmpl-sim-") and first.id != again.id
        assert first.model == MODEL and first.object == "chat.completion"
        assert first.choices[0].finish_reason == "stop"
        usage = first.usage
        assert usage is not None
        assert usage.prompt_tokens == count_tokens(SYSTEM) + count_tokens(PROMPT)
        assert usage.completion_tokens == count_tokens(text) <= 300
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0

    serve(scenario, seed=7)


def test_anthropic_sdk_gets_a_deterministic_simulated_answer_with_true_usage() -> None:
    async def scenario(sim: SimServer) -> None:
        async with anthropic_client(sim) as client:
            system: Any = [{"type": "text", "text": SYSTEM}]
            messages: Any = [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]
            raw = await client.messages.with_raw_response.create(
                model=CLAUDE, max_tokens=200, system=system, messages=messages
            )
            first = await raw.parse()
            again = await client.messages.create(
                model=CLAUDE, max_tokens=200, system=system, messages=messages
            )

        assert raw.headers["request-id"]
        assert first.id.startswith("msg_sim_") and first.model == CLAUDE
        assert first.role == "assistant" and first.stop_reason == "end_turn" and first.stop_sequence is None
        block = first.content[0]
        assert block.type == "text"
        assert block.text.startswith(marker_line(0))
        assert again.content[0].type == "text" and again.content[0].text == block.text
        assert first.usage.input_tokens == count_tokens(SYSTEM) + count_tokens(PROMPT)
        assert first.usage.output_tokens == count_tokens(block.text) <= 200
        assert first.usage.cache_read_input_tokens == 0 and first.usage.cache_creation_input_tokens == 0

    serve(scenario)


def test_both_routes_give_the_same_text_for_the_same_model_system_and_prompt() -> None:
    async def scenario(sim: SimServer) -> tuple[Any, Any]:
        async with http_client(sim) as http:
            chat = await post_chat(http, chat_body(model="m", max_completion_tokens=400))
            msg = await post_messages(http, messages_body(model="m"))
        return chat.json(), msg.json()

    chat, msg = serve(scenario)
    assert chat["choices"][0]["message"]["content"] == msg["content"][0]["text"]
    assert chat["usage"]["prompt_tokens"] == msg["usage"]["input_tokens"]


# -- requests refused before any limit is charged ------------------------------------------------


def test_a_wrong_key_is_refused_without_echoing_it() -> None:
    wrong = "sk-proj-very-secret-wrong-key-9876"

    async def scenario(sim: SimServer) -> None:
        async with openai_client(sim, api_key=wrong) as client:
            with pytest.raises(openai.AuthenticationError) as oe:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}]
                )
        async with anthropic_client(sim, api_key=wrong) as client:
            with pytest.raises(anthropic.AuthenticationError) as ae:
                await client.messages.create(
                    model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
                )
        async with http_client(sim) as http:
            bad = await post_chat(http, chat_body(), {"Authorization": f"Bearer {wrong}"})
            missing = await post_chat(http, chat_body(), {})
            anthropic_bad = await post_messages(
                http, messages_body(), {"x-api-key": wrong, "anthropic-version": "1"}
            )

        assert oe.value.status_code == 401 and oe.value.code == "invalid_api_key"
        assert ae.value.status_code == 401
        message = assert_openai_error(bad, 401, "invalid_request_error", "invalid_api_key")
        assert message.startswith("Incorrect API key provided: sk-...9876")
        assert_openai_error(missing, 401, "invalid_request_error", None)
        assert_anthropic_error(anthropic_bad, 401, "authentication_error")
        for response in (bad, anthropic_bad, oe.value.response, ae.value.response):
            assert wrong not in response.text
            assert wrong[:-4] not in response.text
            assert all(wrong not in value for value in response.headers.values())
        assert sim.stats()["ok"] == 0

    serve(scenario, api_keys=("sk-the-right-key-0000",))


def test_any_non_empty_key_is_accepted_when_none_are_configured() -> None:
    async def scenario(sim: SimServer) -> list[int]:
        async with http_client(sim) as http:
            some = await post_chat(http, chat_body(), {"Authorization": "Bearer anything"})
            bearer = await post_messages(
                http, messages_body(), {"Authorization": "Bearer x", "anthropic-version": "1"}
            )
            empty = await post_chat(http, chat_body(), {"Authorization": "Bearer"})
        return [some.status_code, bearer.status_code, empty.status_code]

    assert serve(scenario) == [200, 200, 401]


def test_an_unknown_model_is_404_in_each_format() -> None:
    async def scenario(sim: SimServer) -> None:
        async with openai_client(sim) as client:
            with pytest.raises(openai.NotFoundError) as oe:
                await client.chat.completions.create(
                    model="gpt-9", messages=[{"role": "user", "content": "hi"}]
                )
        async with anthropic_client(sim) as client:
            with pytest.raises(anthropic.NotFoundError) as ae:
                await client.messages.create(
                    model="claude-9", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
                )
        async with http_client(sim) as http:
            ok = await post_chat(http, chat_body())

        assert oe.value.code == "model_not_found"
        assert oe.value.body == {
            "message": "The model `gpt-9` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
        assert ae.value.body == {
            "type": "error",
            "error": {"type": "not_found_error", "message": "model: claude-9"},
        }
        assert ok.status_code == 200

    serve(scenario, models=(MODEL,))


def test_anthropic_requires_the_version_header_and_max_tokens() -> None:
    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            no_version = await post_messages(http, messages_body(), {"x-api-key": KEY})
            body = messages_body()
            del body["max_tokens"]
            no_max = await post_messages(http, body)
            not_json = await http.post("/v1/messages", content=b"{nope", headers=ANTHROPIC_HEADERS)

        assert "anthropic-version" in assert_anthropic_error(no_version, 400, "invalid_request_error")
        assert "max_tokens" in assert_anthropic_error(no_max, 400, "invalid_request_error")
        assert_anthropic_error(not_json, 400, "invalid_request_error")

    serve(scenario)


def test_openai_answers_422_to_a_body_it_cannot_read() -> None:
    async def scenario(sim: SimServer) -> list[httpx.Response]:
        async with http_client(sim) as http:
            return [
                await http.post("/v1/chat/completions", content=b"{not json", headers=OPENAI_HEADERS),
                await post_chat(http, {"model": MODEL}),
                await post_chat(http, {"messages": [{"role": "user", "content": "hi"}]}),
                await post_chat(http, chat_body(max_tokens=0)),
                await post_chat(http, ["a list"]),
            ]

    for response in serve(scenario):
        assert_openai_error(response, 422, "invalid_request_error", None)


def test_a_request_beyond_the_context_window_is_400() -> None:
    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            chat = await post_chat(http, chat_body(max_tokens=128_000))
            fits = await post_chat(
                http, chat_body(max_tokens=128_000 - count_tokens(SYSTEM) - count_tokens(PROMPT))
            )
            msg = await post_messages(http, messages_body(max_tokens=200_000))

        message = assert_openai_error(chat, 400, "invalid_request_error", "context_length_exceeded")
        assert "maximum context length is 128000 tokens" in message
        assert fits.status_code == 200
        assert "prompt is too long" in assert_anthropic_error(msg, 400, "invalid_request_error")

    serve(scenario)


# -- scripted faults -----------------------------------------------------------------------------

OPENAI_TRIGGERS: dict[str, tuple[int, str, str | None]] = {
    "500": (500, "server_error", None),
    "503": (503, "server_error", None),
    "529": (529, "server_error", None),
    "400": (400, "invalid_request_error", None),
    "429": (429, "requests", "rate_limit_exceeded"),
    "quota": (429, "insufficient_quota", "insufficient_quota"),
    "content_filter": (400, "invalid_request_error", "content_filter"),
}

ANTHROPIC_TRIGGERS: dict[str, tuple[int, str]] = {
    "500": (500, "api_error"),
    "503": (503, "overloaded_error"),
    "529": (529, "overloaded_error"),
    "400": (400, "invalid_request_error"),
    "429": (429, "rate_limit_error"),
    "quota": (400, "invalid_request_error"),
    "content_filter": (400, "invalid_request_error"),
}


@pytest.mark.parametrize("trigger", list(OPENAI_TRIGGERS))
def test_each_status_trigger_answers_the_same_way_every_time(trigger: str) -> None:
    prompt = f"Research tea [[sim:{trigger}]] please."

    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            for _ in range(2):
                chat = await post_chat(http, chat_body(prompt))
                msg = await post_messages(http, messages_body(prompt))
                message = assert_openai_error(chat, *OPENAI_TRIGGERS[trigger])
                anthropic_message = assert_anthropic_error(msg, *ANTHROPIC_TRIGGERS[trigger])
                if trigger == "429":
                    assert (chat.headers["retry-after"], chat.headers["retry-after-ms"]) == ("1", "1000")
                    assert msg.headers["retry-after"] == "1"
                else:
                    assert "retry-after" not in chat.headers and "retry-after" not in msg.headers
                if trigger == "quota":
                    assert (
                        message
                        == "You exceeded your current quota, please check your plan and billing details."
                    )
                    assert "credit balance is too low" in anthropic_message
                if trigger == "content_filter":
                    assert "content management policy" in message
                    assert "content filtering policy" in anthropic_message
        assert sim.stats()["ok"] == 0

    serve(scenario)


def test_the_sdks_raise_their_own_class_for_each_fault() -> None:
    async def scenario(sim: SimServer) -> None:
        async def chat(trigger: str) -> None:
            async with openai_client(sim) as client:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": trigger}]
                )

        async def message(trigger: str) -> None:
            async with anthropic_client(sim) as client:
                await client.messages.create(
                    model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": trigger}]
                )

        with pytest.raises(openai.InternalServerError):
            await chat("[[sim:500]]")
        with pytest.raises(openai.RateLimitError) as quota:
            await chat("[[sim:quota]]")
        assert quota.value.code == "insufficient_quota"
        with pytest.raises(openai.BadRequestError) as filtered:
            await chat("[[sim:content_filter]]")
        assert filtered.value.code == "content_filter"
        with pytest.raises(anthropic.OverloadedError):
            await message("[[sim:529]]")
        with pytest.raises(anthropic.RateLimitError):
            await message("[[sim:429]]")
        with pytest.raises(anthropic.InternalServerError):
            await message("[[sim:500]]")

    serve(scenario)


def test_fail_once_fails_the_first_time_a_key_is_seen_and_succeeds_after() -> None:
    async def scenario(sim: SimServer) -> list[int]:
        async with http_client(sim) as http:
            statuses = []
            for prompt in ("[[sim:fail-once-a]] tea", "[[sim:fail-once-a]] tea", "[[sim:fail-once-b]] tea"):
                statuses.append((await post_chat(http, chat_body(prompt))).status_code)
            statuses.append((await post_messages(http, messages_body("[[sim:fail-once-a]] tea"))).status_code)
            statuses.append((await post_messages(http, messages_body("[[sim:fail-once-c]] tea"))).status_code)
        return statuses

    assert serve(scenario) == [500, 200, 500, 200, 500]


def test_a_dropped_connection_is_a_connection_error_not_a_status() -> None:
    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            with pytest.raises(httpx.TransportError):
                await post_chat(http, chat_body("Research tea [[sim:drop]]"))
            assert (await post_chat(http, chat_body())).status_code == 200  # the client recovers
        async with openai_client(sim) as client:
            with pytest.raises(openai.APIConnectionError) as oe:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "[[sim:drop]]"}]
                )
        assert not isinstance(oe.value, openai.APITimeoutError)
        async with anthropic_client(sim) as client:
            with pytest.raises(anthropic.APIConnectionError):
                await client.messages.create(
                    model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "[[sim:drop]]"}]
                )
        stats = sim.stats()
        assert stats["faults"]["dropped"] == 3
        assert stats["status"] == {"200": 1}

    serve(scenario)


def test_a_malformed_answer_is_a_200_whose_body_is_not_json() -> None:
    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            raw = await post_chat(http, chat_body("[[sim:malformed]] tea"))
        assert raw.status_code == 200 and raw.headers["content-type"].startswith("application/json")
        with pytest.raises(ValueError):
            json.loads(raw.text)
        # what an adapter must catch: both SDKs let the JSON decoder's error through
        async with openai_client(sim) as client:
            with pytest.raises(json.JSONDecodeError):
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "[[sim:malformed]]"}]
                )
        async with anthropic_client(sim) as client:
            with pytest.raises(json.JSONDecodeError):
                await client.messages.create(
                    model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "[[sim:malformed]]"}]
                )
        assert sim.stats()["faults"]["malformed"] == 3
        assert sim.stats()["ok"] == 0

    serve(scenario)


def test_a_slow_answer_runs_past_the_client_timeout_and_stops_counting_as_in_flight() -> None:
    async def scenario(sim: SimServer) -> None:
        async def chat() -> None:
            async with openai_client(sim, timeout=0.5) as client:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "[[sim:slow]]"}]
                )

        async def message() -> None:
            async with anthropic_client(sim, timeout=0.5) as client:
                await client.messages.create(
                    model=CLAUDE, max_tokens=9, messages=[{"role": "user", "content": "[[sim:slow]]"}]
                )

        results = await asyncio.gather(chat(), message(), return_exceptions=True)
        assert isinstance(results[0], openai.APITimeoutError)
        assert isinstance(results[1], anthropic.APITimeoutError)
        for _ in range(100):  # the server notices the client gave up and stops working on it
            if sim.stats()["in_flight"] == 0:
                break
            await asyncio.sleep(0.02)
        stats = sim.stats()
        assert stats["in_flight"] == 0 and stats["max_in_flight"] == 2 and stats["faults"]["slow"] == 2

    serve(scenario, slow_seconds=2)


def test_random_faults_follow_the_seed() -> None:
    async def statuses(sim: SimServer) -> list[int]:
        async with http_client(sim) as http:
            return [(await post_chat(http, chat_body(f"Research topic {i}"))).status_code for i in range(30)]

    first = serve(statuses, seed=3, error_rate=0.3, overload_rate=0.2)
    assert first == serve(statuses, seed=3, error_rate=0.3, overload_rate=0.2)
    assert set(first) == {200, 500, 503}
    assert first != serve(statuses, seed=4, error_rate=0.3, overload_rate=0.2)
    assert serve(statuses, error_rate=1.0) == [500] * 30


def test_random_overload_is_529_on_the_anthropic_route() -> None:
    async def scenario(sim: SimServer) -> httpx.Response:
        async with http_client(sim) as http:
            return await post_messages(http, messages_body())

    assert_anthropic_error(serve(scenario, overload_rate=1.0), 529, "overloaded_error")


def test_above_max_in_flight_the_server_answers_503_busy() -> None:
    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            responses = await asyncio.gather(*(post_chat(http, chat_body()) for _ in range(3)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 503, 503]
        busy = next(r for r in responses if r.status_code == 503)
        assert "busy" in assert_openai_error(busy, 503, "server_error", None)
        assert sim.stats()["max_in_flight"] == 1

    serve(scenario, max_in_flight=1, latency=0.3)


def test_quota_runs_out_once_the_tokens_served_reach_it() -> None:
    async def scenario(sim: SimServer) -> list[int]:
        async with http_client(sim) as http:
            return [(await post_chat(http, chat_body(max_tokens=50))).status_code for _ in range(3)]

    assert serve(scenario, quota_tokens=60) == [200, 429, 429]


# -- rate limits ---------------------------------------------------------------------------------


def test_rpm_lets_a_burst_through_up_to_the_short_window_then_429s_with_retry_headers() -> None:
    async def scenario(sim: SimServer) -> list[httpx.Response]:
        async with http_client(sim) as http:
            return [await post_chat(http, chat_body()) for _ in range(4)]

    responses = serve(scenario, rpm=60, tpm=100_000)
    assert [r.status_code for r in responses] == [200, 200, 429, 429]  # ceil(60 / 60 * 2) = 2 per 2 s
    for r in responses:
        assert r.headers["x-ratelimit-limit-requests"] == "60"
        assert r.headers["x-ratelimit-limit-tokens"] == "100000"
        assert 0 <= int(r.headers["x-ratelimit-remaining-requests"]) <= 60
        assert 0 <= int(r.headers["x-ratelimit-remaining-tokens"]) <= 100_000
        assert 0 <= parse_go(r.headers["x-ratelimit-reset-requests"]) <= 60
        assert 0 <= parse_go(r.headers["x-ratelimit-reset-tokens"]) <= 60
    limited = responses[2]
    message = assert_openai_error(limited, 429, "requests", "rate_limit_exceeded")
    assert message.startswith("Rate limit reached for requests per min (RPM): Limit 60, Used 2, Requested 1.")
    wait_ms = int(limited.headers["retry-after-ms"])
    assert 0 < wait_ms <= 2000
    assert int(limited.headers["retry-after"]) == math.ceil(wait_ms / 1000)
    match = re.search(r"Please try again in (\S+)\.$", message)
    assert match and abs(parse_go(match.group(1)) - wait_ms / 1000) < 0.002
    # a 429 is not charged: the bucket holds what it held after the two admitted requests
    assert responses[3].headers["x-ratelimit-remaining-requests"] == "58"


def test_anthropic_rate_limit_headers_are_rfc3339_instants() -> None:
    async def scenario(sim: SimServer) -> list[httpx.Response]:
        async with http_client(sim) as http:
            return [await post_messages(http, messages_body()) for _ in range(3)]

    before = time.time()
    responses = serve(scenario, rpm=60, tpm=100_000)
    assert [r.status_code for r in responses] == [200, 200, 429]
    for r in responses:
        for kind, limit in (("requests", 60), ("tokens", 100_000)):
            assert r.headers[f"anthropic-ratelimit-{kind}-limit"] == str(limit)
            assert 0 <= int(r.headers[f"anthropic-ratelimit-{kind}-remaining"]) <= limit
            reset = r.headers[f"anthropic-ratelimit-{kind}-reset"]
            assert reset.endswith("Z")
            instant = datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp()
            assert before - 1 <= instant <= time.time() + 61
    assert_anthropic_error(responses[2], 429, "rate_limit_error")
    assert 1 <= int(responses[2].headers["retry-after"]) <= 2


def test_no_rate_limit_headers_without_limits() -> None:
    async def scenario(sim: SimServer) -> httpx.Response:
        async with http_client(sim) as http:
            return await post_chat(http, chat_body())

    headers = serve(scenario).headers
    assert not [name for name in headers if name.lower().startswith("x-ratelimit")]
    assert headers["x-request-id"]


def test_a_request_larger_than_tpm_is_never_admissible_and_gets_no_retry_after() -> None:
    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            too_large = await post_chat(http, chat_body(max_tokens=2000))
            fits = await post_chat(http, chat_body(max_tokens=500))
            msg = await post_messages(http, messages_body(max_tokens=2000))
        message = assert_openai_error(too_large, 429, "tokens", "rate_limit_exceeded")
        requested = count_tokens(SYSTEM) + count_tokens(PROMPT) + 2000
        assert message.startswith(
            f"Request too large for {MODEL} on tokens per min (TPM): Limit 1000, Requested {requested}."
        )
        assert "retry-after" not in too_large.headers and "retry-after-ms" not in too_large.headers
        assert fits.status_code == 200
        assert_anthropic_error(msg, 429, "rate_limit_error")
        assert "retry-after" not in msg.headers
        async with openai_client(sim) as client:
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=5000
                )

    serve(scenario, tpm=1000)


def test_the_token_charge_is_corrected_to_the_real_usage() -> None:
    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            response = await post_chat(http, chat_body(max_tokens=20_000))
        usage = response.json()["usage"]
        assert usage["completion_tokens"] < 1000  # far below the 20,000 reserved
        remaining = int(response.headers["x-ratelimit-remaining-tokens"])
        assert 100_000 - usage["total_tokens"] - 5 <= remaining <= 100_000 - usage["total_tokens"] + 5

    serve(scenario, tpm=100_000)


def test_the_server_limits_run_on_the_injected_clock() -> None:
    now = [1000.0]

    async def scenario(sim: SimServer) -> list[tuple[int, str | None]]:
        seen = []
        async with http_client(sim) as http:
            for step in (0.0, 0.0, 0.0, 1.0, 1.0):
                now[0] += step
                r = await post_chat(http, chat_body())
                seen.append((r.status_code, r.headers.get("retry-after-ms")))
        return seen

    assert serve(scenario, rpm=60, clock=lambda: now[0]) == [
        (200, None),
        (200, None),
        (429, "1000"),  # the short bucket (2 s worth = 2) is empty; 1 a second comes back
        (200, None),
        (200, None),
    ]


# -- stats and admin ----------------------------------------------------------------------------


def test_stats_count_calls_statuses_tokens_and_completions_by_key() -> None:
    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            answers = [await post_chat(http, chat_body()) for _ in range(2)]
            answers.append(await post_messages(http, messages_body()))
            await post_chat(http, chat_body("[[sim:500]]"))
            await post_chat(http, chat_body(), {})
            stats = (await http.get("/sim/stats")).json()
            assert stats == sim.stats()
            assert (await http.get("/health")).text == "ok"
            reset = (await http.post("/sim/reset")).json()

        assert stats["calls"] == 5 and stats["ok"] == 3
        assert stats["status"] == {"200": 3, "401": 1, "500": 1}
        assert stats["rate_limited"] == 0 and stats["in_flight"] == 0 and stats["max_in_flight"] == 1
        usages = [a.json()["usage"] for a in answers]
        assert stats["tokens"]["input"] == sum(
            u.get("prompt_tokens", u.get("input_tokens", 0)) for u in usages
        )
        assert stats["tokens"]["output"] == sum(
            u.get("completion_tokens", u.get("output_tokens", 0)) for u in usages
        )
        key = hashlib.sha256(f"{MODEL}\x00{SYSTEM}\x00{PROMPT}".encode()).hexdigest()[:16]
        assert key == completion_key(MODEL, SYSTEM, PROMPT)
        assert stats["completed_by_key"] == {key: 2, completion_key(CLAUDE, SYSTEM, PROMPT): 1}
        assert time.time() - 60 < stats["started"] <= time.time()
        assert reset["calls"] == 0 and reset["status"] == {} and reset["completed_by_key"] == {}

    serve(scenario)


def test_reset_refills_the_buckets() -> None:
    async def scenario(sim: SimServer) -> list[int]:
        async with http_client(sim) as http:
            statuses = [(await post_chat(http, chat_body())).status_code for _ in range(3)]
            await http.post("/sim/reset")
            statuses.append((await post_chat(http, chat_body())).status_code)
        return statuses

    assert serve(scenario, rpm=60) == [200, 200, 429, 200]


def test_config_endpoint_replaces_settings_and_validates_them() -> None:
    async def scenario(sim: SimServer) -> None:
        async with http_client(sim) as http:
            changed = await http.post("/sim/config", json={"error_rate": 1.0, "api_keys": [KEY]})
            failing = await post_chat(http, chat_body())
            unknown = await http.post("/sim/config", json={"error_rat": 1.0})
            too_high = await http.post("/sim/config", json={"error_rate": 0.8, "drop_rate": 0.5})
            not_object = await http.post("/sim/config", json=[1])
            await http.post("/sim/config", json={"error_rate": 0})
            back = await post_chat(http, chat_body())

        assert changed.status_code == 200
        settings = changed.json()
        assert set(settings) == set(SimServerSettings.model_fields)
        assert settings["error_rate"] == 1.0 and settings["rpm"] is None
        assert KEY not in changed.text and settings["api_keys"] == ["sk-..." + KEY[-4:]]
        assert failing.status_code == 500
        for bad in (unknown, too_high, not_object):
            assert bad.status_code == 422, bad.text
        assert "error_rat" in unknown.json()["error"]["message"]
        assert back.status_code == 200 and sim.settings.error_rate == 0

    serve(scenario)


def test_the_server_thread_serves_synchronous_clients() -> None:
    with SimServerThread(SimServerSettings(seed=5)) as sim:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.url)
        with openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sim", max_retries=0, timeout=10) as client:
            reply = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": PROMPT}]
            )
            assert (reply.choices[0].message.content or "").startswith(marker_line(5))
            assert sim.configure(error_rate=1.0).error_rate == 1.0
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}])
        assert sim.stats()["status"] == {"200": 1, "500": 1}
        sim.reset()
        assert sim.stats()["calls"] == 0


# -- the command ---------------------------------------------------------------------------------

SCRIPT = Path(sys.executable).parent / "chainfleet"


@pytest.mark.skipif(not SCRIPT.exists() or os.name != "posix", reason="needs the console script and SIGINT")
def test_the_command_prints_its_url_serves_and_stops_cleanly_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [SCRIPT, "sim-server", "--port", "0", "--rpm", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "sim-server printed nothing within 20 s"
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        match = re.fullmatch(
            r"chainfleet sim-server listening on (http://127\.0\.0\.1:(\d+)) "
            r"\(OpenAI: /v1/chat/completions, Anthropic: /v1/messages\)\n",
            first,
        )
        assert match, first
        url = match.group(1)
        assert int(match.group(2)) > 0
        assert f"OPENAI_BASE_URL={url}/v1 OPENAI_API_KEY=sim" in second
        assert f"ANTHROPIC_BASE_URL={url} ANTHROPIC_API_KEY=sim" in second
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/health").text == "ok"
            answer = http.post("/v1/chat/completions", json=chat_body(), headers=OPENAI_HEADERS)
            assert answer.status_code == 200 and answer.headers["x-ratelimit-limit-requests"] == "500"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "sim-server stopped. calls: 1, answered: 1, rate-limited (429): 0" in out
    assert "Traceback" not in err
