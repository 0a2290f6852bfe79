"""What the gateway reads from a request and its answer: the journal's key (the same call
however a client orders its JSON), the provider, model and tokens to reserve, and the usage of
an answer, streamed or not, in each API's spelling."""

from __future__ import annotations

import json

import pytest

from chainfleet.code.wire import DEFAULT_MAX_OUTPUT, read_target, request_hash, usage_of


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_the_key_ignores_the_order_of_json_keys_but_not_the_content() -> None:
    one = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}'
    two = b'{"max_tokens": 5, "messages": [{"content": "hi", "role": "user"}], "model": "m"}'
    assert request_hash("POST", "/v1/chat/completions", one) == request_hash(
        "post", "/v1/chat/completions", two
    )
    other = one.replace(b"hi", b"ho")
    assert request_hash("POST", "/v1/chat/completions", other) != request_hash(
        "POST", "/v1/chat/completions", one
    )
    assert request_hash("POST", "/v1/responses", one) != request_hash("POST", "/v1/chat/completions", one)


@pytest.mark.parametrize(
    ("path", "provider", "endpoint"),
    [
        ("/v1/chat/completions", "openai", "chat"),
        ("/openai/deployments/x/chat/completions", "openai", "chat"),
        ("/v1/responses", "openai", "responses"),
        ("/v1/embeddings", "openai", "embeddings"),
        ("/v1/messages", "anthropic", "messages"),
    ],
)
def test_the_api_and_model_are_read_from_the_path_and_body(path: str, provider: str, endpoint: str) -> None:
    target = read_target(path, body(model="gpt-x", input="hello", max_tokens=100, stream=True))
    assert (target.provider, target.endpoint, target.model, target.stream) == (
        provider,
        endpoint,
        "gpt-x",
        True,
    )
    assert target.spec == f"{provider}:gpt-x"
    most = 0 if endpoint == "embeddings" else 100
    assert target.estimate >= most + 1


def test_an_unknown_path_or_body_is_no_target() -> None:
    assert read_target("/health", b"").provider is None
    assert read_target("/v1/chat/completions", b"not json").spec is None


def test_a_request_that_does_not_say_how_much_it_writes_reserves_the_default() -> None:
    target = read_target("/v1/chat/completions", body(model="m", messages=[]))
    assert target.estimate >= DEFAULT_MAX_OUTPUT


def test_usage_in_each_api_spelling() -> None:
    chat = body(
        usage={"prompt_tokens": 11, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}}
    )
    found = usage_of(chat, stream=False)
    assert (found.input_tokens, found.output_tokens, found.cached_tokens) == (11, 5, 4)
    claude = usage_of(
        body(usage={"input_tokens": 9, "output_tokens": 3, "cache_read_input_tokens": 2}), stream=False
    )
    assert (claude.input_tokens, claude.output_tokens, claude.cached_tokens) == (9, 3, 2)


def test_usage_of_streams_in_the_three_formats() -> None:
    def sse(*events: object) -> bytes:
        return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"

    chat = sse(
        {"choices": [{"delta": {"content": "a"}}]},
        {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
    )
    responses = sse(
        {"type": "response.created"},
        {"type": "response.completed", "response": {"usage": {"input_tokens": 8, "output_tokens": 4}}},
    )
    claude = sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 6, "output_tokens": 1}}},
        {"type": "message_delta", "usage": {"output_tokens": 9}},
    )
    found = [usage_of(stream, stream=True) for stream in (chat, responses, claude)]
    assert [(u.input_tokens, u.output_tokens) for u in found] == [(7, 2), (8, 4), (6, 9)]
