"""Reading conversations in the three wire formats, and cutting answers into stream events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainfleet.sim import messages
from chainfleet.sim.call import Failure
from chainfleet.sim.embeddings import Embeddings
from chainfleet.sim.responses import Responses
from chainfleet.sim.stream import anthropic_events, chat_events, pieces
from chainfleet.sim.wire import Anthropic, OpenAI

SEARCH = {"type": "object", "properties": {"query": {"type": "string"}}}


@given(st.text())
def test_stream_pieces_join_back_into_the_text(text: str) -> None:
    assert "".join(pieces(text)) == text
    assert "".join(pieces(text, json_text=True)) == text


def test_a_plain_conversation_reads_as_before_tools_were_known() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Cite."}]},
            {"role": "user", "content": "Research tea."},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": [{"type": "text", "text": "More"}, {"type": "text", "text": "!"}]},
        ]
    }
    system, prompt, talk = messages.chat(body)
    assert system == "Be terse.\n\nCite."
    assert prompt == "Research tea.\n\n\n\nMore!"
    assert not talk.plays_agent


def test_the_same_tool_conversation_reads_the_same_in_all_three_formats() -> None:
    arguments = {"query": "tea"}
    chat = {
        "messages": [
            {"role": "user", "content": "Research tea."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "search", "arguments": json.dumps(arguments)},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "search", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Tea is old."},
            {"role": "tool", "tool_call_id": "call_2", "content": "Error: no query"},
        ],
        "tools": [{"type": "function", "function": {"name": "search", "parameters": SEARCH}}],
    }
    claude = {
        "messages": [
            {"role": "user", "content": "Research tea."},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "search", "input": arguments},
                    {"type": "tool_use", "id": "call_2", "name": "search", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "Tea is old."},
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": "Error: no query",
                        "is_error": True,
                    },
                ],
            },
        ],
        "tools": [{"name": "search", "input_schema": SEARCH}],
    }
    responses = {
        "input": [
            {"role": "user", "content": "Research tea."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "search",
                "arguments": json.dumps(arguments),
            },
            {"type": "function_call", "call_id": "call_2", "name": "search", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Tea is old."},
            {"type": "function_call_output", "call_id": "call_2", "output": "Error: no query"},
        ],
        "tools": [{"type": "function", "name": "search", "parameters": SEARCH}],
    }
    read = [messages.chat(chat), messages.anthropic(claude), messages.responses(responses)]
    assert read[0] == read[1] == read[2]
    _, prompt, talk = read[0]
    assert [m["role"] for m in talk.messages] == ["user", "assistant", "tool", "tool"]
    assert [m["is_error"] for m in talk.messages[2:]] == [False, True]
    assert prompt == 'Research tea.\n\nsearch({"query": "tea"})\nsearch({})\n\nTea is old.\n\nError: no query'
    assert talk.tools == ({"name": "search", "description": "", "parameters": SEARCH},)


def test_tools_count_in_the_prompt_tokens() -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    bare = OpenAI().parse(body)
    with_tools = OpenAI().parse(
        {**body, "tools": [{"type": "function", "function": {"name": "s", "parameters": SEARCH}}]}
    )
    assert with_tools.prompt_tokens > bare.prompt_tokens
    assert with_tools.prompt == bare.prompt


@pytest.mark.parametrize(
    ("dialect", "body", "where"),
    [
        (OpenAI(), {"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
        (
            OpenAI(),
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web"}]},
            "tools.0",
        ),
        (
            Anthropic(),
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "tool_result"}]}],
            },
            "messages.0.content.0.tool_use_id",
        ),
        (Responses(), {"model": "m", "input": []}, "input"),
        (Responses(), {"model": "m", "input": [{"type": "function_call", "name": "s"}]}, "input.0.call_id"),
        (Responses(), {"model": "m", "input": "x", "conversation": "c1"}, "conversation"),
        (Responses(), {"model": "m", "input": "x", "stream": 1}, "stream"),
        (Responses(), {"model": "m", "input": "x", "tools": 5}, "tools"),
        (
            Responses(),
            {
                "model": "m",
                "input": "x",
                "tools": [{"type": "function", "name": "s", "parameters": {"type": 5}}],
            },
            "tools.0.parameters: invalid JSON Schema",
        ),
        (
            OpenAI(),
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": {"a": 1}},
            "tools",
        ),
        (
            Anthropic(),
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": 5},
            "tools",
        ),
        (
            Anthropic(),
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": ["a"]},
            "tools.0",
        ),
    ],
)
def test_a_wrong_shape_is_a_failure_naming_its_place(dialect: Any, body: dict[str, Any], where: str) -> None:
    with pytest.raises(Failure) as caught:
        dialect.parse(body)
    assert caught.value.fields["detail"].startswith(where)


def test_chat_events_carry_the_text_the_calls_and_the_usage() -> None:
    body = {
        "id": "chatcmpl-1",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "one two three four five"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9},
    }
    events = [e.decode() for e in chat_events(body, include_usage=True)]
    data = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert events[-1] == "data: [DONE]\n\n"
    assert (
        "".join(d["choices"][0]["delta"].get("content") or "" for d in data if d["choices"])
        == "one two three four five"
    )
    assert data[-1] == {**data[-1], "choices": [], "usage": body["usage"]}


def test_anthropic_events_stream_tool_input_as_json_pieces() -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {
                "type": "tool_use",
                "id": "call_1",
                "name": "search",
                "input": {"query": "a long query about tea"},
            }
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 4, "output_tokens": 7},
    }
    data = [json.loads(e.decode().split("data: ", 1)[1]) for e in anthropic_events(body)]
    partial = "".join(d["delta"]["partial_json"] for d in data if d["type"] == "content_block_delta")
    assert json.loads(partial) == {"query": "a long query about tea"}
    assert data[0]["message"]["usage"]["input_tokens"] == 4
    assert data[-2]["usage"] == {"output_tokens": 7}


_KEYS = st.sampled_from(
    [
        "model",
        "messages",
        "input",
        "tools",
        "tool_choice",
        "role",
        "content",
        "type",
        "text",
        "tool_calls",
        "function",
        "name",
        "arguments",
        "id",
        "call_id",
        "output",
        "tool_use_id",
        "input_schema",
        "parameters",
        "max_tokens",
        "system",
        "instructions",
        "stream",
        "is_error",
        "parallel_tool_calls",
        "text",
    ]
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(["user", "assistant", "tool", "function", "auto", "m"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)


_BODIES = _JSON | st.builds(
    lambda extra: {"model": "m", "max_tokens": 5, **extra}, st.dictionaries(_KEYS, _JSON, max_size=6)
)


@settings(max_examples=400)
@given(_BODIES)
def test_any_body_is_read_or_refused_with_a_failure_never_a_crash(body: Any) -> None:
    for dialect in (OpenAI(), Anthropic(), Responses(), Embeddings()):
        try:
            dialect.parse(body)
        except Failure:
            pass
