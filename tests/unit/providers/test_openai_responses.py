"""The Responses API adapter's two translations, in process: our conversation to ``input``
items (function calls and their outputs paired by ``call_id``), and the SDK's ``Response`` back
to a completion (tool calls, text, usage; a refusal or a filtered reply is ContentFiltered)."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response

from chainfleet.errors import ContentFiltered, ServerError
from chainfleet.providers import CompletionRequest, ToolCall
from chainfleet.providers.openai_responses import OpenAIResponsesProvider, responses_input

SECRET = "sk-unit-responses-0123456789abcdef"


def response(output: list[dict[str, Any]], **extra: Any) -> Response:
    body = {
        "id": "resp_1", "object": "response", "created_at": 0, "model": "gpt-x", "output": output,
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "usage": {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17,
                  "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
        **extra,
    }  # fmt: skip
    return Response.model_validate(body)


@pytest.fixture
def provider() -> OpenAIResponsesProvider:
    return OpenAIResponsesProvider(api_key=SECRET, base_url="http://127.0.0.1:9/v1")


def test_a_conversation_becomes_instructions_and_input_items() -> None:
    calls = [{"id": "call_a", "name": "search", "arguments": {"query": "tea"}}]
    request = CompletionRequest(
        model="m",
        prompt="",
        messages=(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Research tea."},
            {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_a", "content": "error: offline", "is_error": True},
        ),
    )
    instructions, items = responses_input(request)
    assert instructions == "Be brief."
    assert items == [
        {"type": "message", "role": "user", "content": "Research tea."},
        {"type": "function_call", "call_id": "call_a", "name": "search", "arguments": '{"query": "tea"}'},
        {"type": "function_call_output", "call_id": "call_a", "output": "error: offline"},
    ]


def test_function_calls_text_and_usage_come_back(provider: OpenAIResponsesProvider) -> None:
    reply = response(
        [
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "search",
                "arguments": '{"q": 1}',
            },
            {
                "type": "function_call",
                "id": "fc_2",
                "call_id": "call_2",
                "name": "search",
                "arguments": "not json",
            },
        ]
    )
    done = provider.response_from(reply, {})
    assert done.tool_calls == (
        ToolCall("call_1", "search", {"q": 1}),
        ToolCall("call_2", "search", {"_unparsed": "not json"}),  # the tool's schema refuses it
    )
    assert (done.text, done.input_tokens, done.output_tokens, done.cached_tokens) == ("", 12, 5, 4)
    text = {"type": "output_text", "text": "Tea is a drink.", "annotations": []}
    message = {"type": "message", "id": "m1", "role": "assistant", "status": "completed", "content": [text]}
    assert provider.response_from(response([message]), {}).text == "Tea is a drink."


def test_a_refusal_or_a_filtered_reply_is_content_filtered(provider: OpenAIResponsesProvider) -> None:
    refusal = {"type": "refusal", "refusal": f"no ({SECRET})"}
    message = {
        "type": "message",
        "id": "m1",
        "role": "assistant",
        "status": "completed",
        "content": [refusal],
    }
    with pytest.raises(ContentFiltered) as caught:
        provider.response_from(response([message]), {})
    assert SECRET not in str(caught.value)
    filtered = response([], status="incomplete", incomplete_details={"reason": "content_filter"})
    with pytest.raises(ContentFiltered):
        provider.response_from(filtered, {})
    with pytest.raises(ServerError, match="no message or function call"):
        provider.response_from(response([]), {})
    assert SECRET not in repr(provider)
