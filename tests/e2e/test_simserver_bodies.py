"""A body the sim-server cannot read gets a client error in its API's own words, never a 500.

Each test posts one malformed body over loopback with a valid key, to the completion routes
(``/v1/chat/completions``, ``/v1/messages``) and the batch routes that read JSON
(``/v1/batches``, ``/v1/messages/batches``, and the upload ``/v1/files``), and checks the
status, the error shape, that the message names what is wrong, and that nothing was logged at
ERROR (a handler that raised logs aiohttp's "Error handling request" with a traceback).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx2 as httpx
import pytest

from chainfleet.sim.server import SimServer
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-sim-test-key-0123456789"

OPENAI_HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "Content-Type": "application/json"}


def _body(**change: Any) -> bytes:
    body = {"model": "sim-model", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
    return json.dumps({**body, **change}).encode()


#: name -> (raw body, what the message of a completion route names)
BODIES: dict[str, tuple[bytes, str]] = {
    "truncated": (b"{", "not valid JSON"),
    "array": (b"[]", "JSON object"),
    "null": (b"null", "JSON object"),
    "string": (b'"text"', "JSON object"),
    "number": (b"123", "JSON object"),
    # json.dumps writes the lone surrogate as the escape \ud800, as a client's encoder would
    "lone_surrogate_escape": (
        _body(messages=[{"role": "user", "content": "a\ud800b"}]),
        "messages.0.content: a lone surrogate",
    ),
    "invalid_utf8": (
        _body(messages=[{"role": "user", "content": "ab"}]).replace(b"ab", b"a\xff\xfe"),
        "UTF-8",
    ),
    "messages_not_a_list": (_body(messages="Hi"), "messages"),
    "message_not_an_object": (_body(messages=["Hi"]), "messages.0"),
    "max_tokens_wrong_type": (_body(max_tokens="fifty"), "max_tokens"),
}

#: route -> (dialect, headers, status of a bad body)
ROUTES: dict[str, tuple[str, dict[str, str], int]] = {
    # the sim answers OpenAI's bad bodies 422 (as documented in chainfleet.sim.wire)
    "/v1/chat/completions": ("openai", OPENAI_HEADERS, 422),
    "/v1/messages": ("anthropic", ANTHROPIC_HEADERS, 400),
    "/v1/batches": ("openai", OPENAI_HEADERS, 400),
    "/v1/messages/batches": ("anthropic", ANTHROPIC_HEADERS, 400),
    "/v1/files": ("openai", OPENAI_HEADERS, 400),
}


def post(path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    async def main() -> httpx.Response:
        async with SimServer(SimServerSettings(api_keys=(KEY,))) as sim:
            async with httpx.AsyncClient(base_url=sim.url, trust_env=False, timeout=10) as http:
                return await http.post(path, content=content, headers=headers)

    return asyncio.run(main())


def error_message(response: httpx.Response, dialect: str) -> str:
    """The message of an error body in ``dialect``'s shape (asserting the shape)."""
    body = response.json()
    if dialect == "openai":
        assert set(body) == {"error"}, body
        assert body["error"]["type"] == "invalid_request_error"
        assert {"message", "type", "param", "code"} <= set(body["error"])
        message = body["error"]["message"]
    else:
        assert body["type"] == "error", body
        assert body["error"]["type"] == "invalid_request_error"
        message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


def assert_nothing_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("name", list(BODIES))
def test_a_malformed_body_is_a_client_error_in_the_apis_words(
    route: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    dialect, headers, status = ROUTES[route]
    content, names = BODIES[name]

    response = post(route, content, headers)

    assert response.status_code == status, response.text
    message = error_message(response, dialect)
    if route in ("/v1/chat/completions", "/v1/messages"):
        assert names in message
    assert_nothing_logged(caplog)


@pytest.mark.parametrize(
    ("line", "names"),
    [
        (b"{", "input file line 2 is not valid JSON"),
        (b"[1]", "input file line 2 must be a JSON object"),
        (b'{"custom_id": "\\udc00"}', "input file line 2, at custom_id: a lone surrogate"),
        (b'{"custom_id": "a\xffb"}', "input file line 2 is not valid UTF-8"),
    ],
)
def test_an_openai_batch_file_with_a_bad_line_is_refused_naming_the_line(
    line: bytes, names: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    good = _body()

    async def main() -> httpx.Response:
        async with SimServer(SimServerSettings(api_keys=(KEY,))) as sim:
            async with httpx.AsyncClient(base_url=sim.url, trust_env=False, timeout=10) as http:
                auth = {"Authorization": f"Bearer {KEY}"}
                data = b'{"custom_id": "a", "body": ' + good + b"}\n" + line + b"\n"
                upload = await http.post(
                    "/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", data)}, headers=auth
                )
                assert upload.status_code == 200, upload.text
                body = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions"}
                return await http.post("/v1/batches", json=body, headers=auth)

    response = asyncio.run(main())
    assert response.status_code == 400, response.text
    assert names in error_message(response, "openai")
    assert_nothing_logged(caplog)


def test_an_anthropic_batch_request_that_is_not_an_object_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    response = post("/v1/messages/batches", b'{"requests": ["hi"]}', ANTHROPIC_HEADERS)
    assert response.status_code == 400, response.text
    assert "requests.0" in error_message(response, "anthropic")
    assert_nothing_logged(caplog)


_TOOL = {"name": "answer", "input_schema": {"type": "object"}}


def _tools(*tools: Any, choice: Any) -> bytes:
    return _body(tools=list(tools), tool_choice=choice)


def _strict(schema: Any) -> bytes:
    spec = {"name": "answer", "strict": True, "schema": schema}
    messages = [{"role": "user", "content": "Answer in JSON."}]
    return _body(messages=messages, response_format={"type": "json_schema", "json_schema": spec})


@pytest.mark.parametrize(
    ("route", "content", "names"),
    [
        ("/v1/messages", _tools(_TOOL, choice={"type": "tool", "name": ["answer"]}), "tool_choice"),
        (
            "/v1/messages",
            _tools(
                {"name": "answer", "input_schema": {"type": "object", "properties": [1]}},
                choice={"type": "any"},
            ),
            "tools.0.custom.input_schema: JSON schema is invalid: properties",
        ),
        (
            "/v1/chat/completions",
            _strict(
                {"type": "object", "properties": {"a": {}}, "required": 5, "additionalProperties": False}
            ),
            "Invalid schema for response_format 'answer': required",
        ),
    ],
    ids=["tool_choice_name_not_a_string", "tool_properties_a_list", "strict_required_not_a_list"],
)
def test_a_malformed_request_for_structured_output_is_a_400(
    route: str, content: bytes, names: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    dialect, headers, _ = ROUTES[route]
    response = post(route, content, headers)
    assert response.status_code == 400, response.text
    assert names in error_message(response, dialect)
    assert_nothing_logged(caplog)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}}},
        {"type": "object", "properties": {"n": {"anyOf": [True, {"type": "null"}]}}},
    ],
    ids=["maximum_below_minimum", "anyof_boolean_schema"],
)
def test_an_odd_but_valid_schema_gets_a_json_answer(schema: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Schemas their meta-schema accepts, that the JSON generator used to crash on (a 500)."""
    caplog.set_level(logging.ERROR)
    tool = {"name": "answer", "input_schema": schema}
    response = post("/v1/messages", _tools(tool, choice={"type": "any"}), ANTHROPIC_HEADERS)
    assert response.status_code == 200, response.text
    assert set(response.json()["content"][0]["input"]) == {"n"}
    assert_nothing_logged(caplog)
