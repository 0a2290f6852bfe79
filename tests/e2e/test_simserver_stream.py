"""``stream: true`` on the sim-server, as the official SDKs and their stream helpers assemble it.

Each streamed answer is checked against the same request not streamed: the text (or tool
calls) and the usage the SDK assembles from the events are the same.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-sim-test-key-0123456789"
MODEL = "gpt-4o-mini"
CLAUDE = "claude-sim-test"
SYSTEM = "You are a meticulous research agent."
PROMPT = "Research the history of tea: the key facts, figures and open questions."
TOOL_PROMPT = "Research tidal power. [[sim:tool_turns=1]]"
SEARCH = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
FETCH = {"type": "object", "properties": {"url": {"type": "string"}, "depth": {"type": "integer"}}}

_CLIENTS: list[openai.OpenAI | anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,))) as sim:
        yield sim
        while _CLIENTS:
            _CLIENTS.pop().close()


@pytest.fixture
def sim(server: SimServerThread) -> SimServerThread:
    server.reset()
    return server


@pytest.fixture
def client(sim: SimServerThread) -> openai.OpenAI:
    made = openai.OpenAI(base_url=f"{sim.url}/v1", api_key=KEY, max_retries=0, timeout=10)
    _CLIENTS.append(made)
    return made


@pytest.fixture
def claude(sim: SimServerThread) -> anthropic.Anthropic:
    made = anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0, timeout=10)
    _CLIENTS.append(made)
    return made


def chat_messages(prompt: str = PROMPT) -> list[Any]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "search", "parameters": SEARCH}},
    {"type": "function", "function": {"name": "fetch", "parameters": FETCH}},
]
RESPONSES_TOOLS: list[Any] = [
    {
        "type": "function",
        "name": t["function"]["name"],
        "parameters": t["function"]["parameters"],
        "strict": False,
    }
    for t in CHAT_TOOLS
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in CHAT_TOOLS
]


# --- OpenAI chat completions --------------------------------------------------------------------


def test_chat_stream_chunks_add_up_to_the_answer_and_its_usage(
    client: openai.OpenAI, sim: SimServerThread
) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=chat_messages(), max_tokens=300)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=chat_messages(),
            max_tokens=300,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert len(chunks) > 5
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.usage is None for c in chunks[:-1])
    stats = sim.stats()
    assert stats["streamed"] == 1 and stats["ok"] == 2
    assert stats["tokens"]["output"] == 2 * plain.usage.completion_tokens  # type: ignore[union-attr]


def test_chat_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=chat_messages(), stream=True))
    assert all(c.choices and c.usage is None for c in chunks)


def test_chat_stream_helper_assembles_parallel_tool_calls(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=chat_messages(TOOL_PROMPT), tools=CHAT_TOOLS)
    with client.chat.completions.stream(
        model=MODEL,
        messages=chat_messages(TOOL_PROMPT),
        tools=CHAT_TOOLS,
        stream_options={"include_usage": True},
    ) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_completion()

    assert "tool_calls.function.arguments.delta" in kinds
    assert final.choices[0].finish_reason == "tool_calls"
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments))
        for c in final.choices[0].message.tool_calls or []
    ]  # type: ignore[union-attr]
    expected = [
        (c.id, c.function.name, json.loads(c.function.arguments))
        for c in plain.choices[0].message.tool_calls or []
    ]  # type: ignore[union-attr]
    assert calls == expected and calls
    assert final.usage == plain.usage


def test_chat_stream_helper_gives_the_text(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=chat_messages())
    with client.chat.completions.stream(model=MODEL, messages=chat_messages()) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == plain.choices[0].message.content


# --- OpenAI Responses ---------------------------------------------------------------------------


def test_responses_stream_events_add_up_to_the_response(client: openai.OpenAI) -> None:
    plain = client.responses.create(model=MODEL, input=PROMPT, instructions=SYSTEM, max_output_tokens=300)
    events = list(
        client.responses.create(
            model=MODEL, input=PROMPT, instructions=SYSTEM, max_output_tokens=300, stream=True
        )
    )

    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_text.done" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == plain.output_text
    completed = events[-1].response  # type: ignore[union-attr]
    assert completed.usage == plain.usage and completed.output_text == plain.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_responses_stream_helper_with_function_calls(client: openai.OpenAI) -> None:
    plain = client.responses.create(model=MODEL, input=TOOL_PROMPT, tools=RESPONSES_TOOLS)
    with client.responses.stream(model=MODEL, input=TOOL_PROMPT, tools=RESPONSES_TOOLS) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_response()

    assert {"response.function_call_arguments.delta", "response.function_call_arguments.done"} <= kinds
    calls = [(o.call_id, o.name, json.loads(o.arguments)) for o in final.output if o.type == "function_call"]
    expected = [
        (o.call_id, o.name, json.loads(o.arguments)) for o in plain.output if o.type == "function_call"
    ]
    assert calls == expected and calls
    assert final.usage == plain.usage


def test_responses_stream_helper_gives_the_text(client: openai.OpenAI) -> None:
    plain = client.responses.create(model=MODEL, input=PROMPT)
    with client.responses.stream(model=MODEL, input=PROMPT) as stream:
        final = stream.get_final_response()
    assert final.output_text == plain.output_text and final.usage == plain.usage


# --- Anthropic messages -------------------------------------------------------------------------


def test_anthropic_stream_events_add_up_to_the_message(claude: anthropic.Anthropic) -> None:
    plain = claude.messages.create(
        model=CLAUDE, max_tokens=300, system=SYSTEM, messages=[{"role": "user", "content": PROMPT}]
    )
    events = list(
        claude.messages.create(
            model=CLAUDE,
            max_tokens=300,
            system=SYSTEM,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
        )
    )

    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    text = "".join(
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == plain.content[0].text  # type: ignore[union-attr]
    assert events[0].message.usage.input_tokens == plain.usage.input_tokens  # type: ignore[union-attr]
    assert events[-2].usage.output_tokens == plain.usage.output_tokens  # type: ignore[union-attr]
    assert events[-2].delta.stop_reason == "end_turn"  # type: ignore[union-attr]


def test_anthropic_stream_helper_gives_the_message(claude: anthropic.Anthropic) -> None:
    ask: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": 300,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    plain = claude.messages.create(**ask)
    with claude.messages.stream(**ask) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text  # type: ignore[union-attr]
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.usage == plain.usage and final.stop_reason == "end_turn"


def test_anthropic_stream_helper_assembles_tool_use(claude: anthropic.Anthropic) -> None:
    ask: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": TOOL_PROMPT}],
        "tools": ANTHROPIC_TOOLS,
    }
    plain = claude.messages.create(**ask)
    with claude.messages.stream(**ask) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_message()
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use" and final.content == plain.content
    assert final.usage == plain.usage


def test_anthropic_forced_tool_streams_its_structured_input(claude: anthropic.Anthropic) -> None:
    ask: dict[str, Any] = {
        "model": CLAUDE,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": PROMPT}],
        "tools": ANTHROPIC_TOOLS,
        "tool_choice": {"type": "tool", "name": "search"},
    }
    plain = claude.messages.create(**ask)
    with claude.messages.stream(**ask) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == plain.content[0].input  # type: ignore[union-attr]


def test_a_stream_is_server_sent_events_and_errors_stay_json(sim: SimServerThread) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL, "messages": chat_messages(), "stream": True}
    with httpx.stream("POST", f"{sim.url}/v1/chat/completions", json=body, headers=auth) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    refused = httpx.post(f"{sim.url}/v1/chat/completions", json={**body, "stream": "yes"}, headers=auth)
    assert refused.status_code == 422 and "stream" in refused.json()["error"]["message"]
    unauthorized = httpx.post(f"{sim.url}/v1/responses", json={"model": MODEL, "input": "Hi", "stream": True})
    assert unauthorized.status_code == 401 and unauthorized.headers["content-type"].startswith(
        "application/json"
    )


# --- the async clients (what chainfleet's Python door hands a chain) --------------------------------


def test_the_async_clients_stream_the_same_answers(sim: SimServerThread) -> None:
    async def main() -> tuple[str, str, str]:
        async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key=KEY, max_retries=0) as client:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model=MODEL, messages=chat_messages(), stream=True
                )
            ]
            chat = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            async with client.responses.stream(model=MODEL, input=PROMPT) as stream:
                responses = (await stream.get_final_response()).output_text
        async with anthropic.AsyncAnthropic(base_url=sim.url, api_key=KEY, max_retries=0) as claude:
            ask: dict[str, Any] = {
                "model": CLAUDE,
                "max_tokens": 300,
                "messages": [{"role": "user", "content": PROMPT}],
            }
            async with claude.messages.stream(**ask) as events:
                text = await events.get_final_text()
        return chat, responses, text

    chat, responses, text = asyncio.run(main())
    with openai.OpenAI(base_url=f"{sim.url}/v1", api_key=KEY, max_retries=0) as client:
        assert (
            chat
            == client.chat.completions.create(model=MODEL, messages=chat_messages())
            .choices[0]
            .message.content
        )
        assert responses == client.responses.create(model=MODEL, input=PROMPT).output_text
    with anthropic.Anthropic(base_url=sim.url, api_key=KEY, max_retries=0) as claude:
        plain = claude.messages.create(
            model=CLAUDE, max_tokens=300, messages=[{"role": "user", "content": PROMPT}]
        )
    assert text == plain.content[0].text  # type: ignore[union-attr]
    assert sim.stats()["streamed"] == 3
