"""The wire formats the sim server speaks: OpenAI chat completions and Anthropic messages.

A :class:`Dialect` is everything that differs between ``POST /v1/chat/completions``
(:class:`OpenAI`) and ``POST /v1/messages`` (:class:`Anthropic`), and ``POST /v1/responses``
(:class:`~chainfleet.sim.responses.Responses`, a kind of :class:`OpenAI`); the server and the
batch jobs run the same rules through any one:

- :meth:`~Dialect.authorize`: the key (OpenAI ``Authorization: Bearer KEY``; Anthropic
  ``x-api-key``, or a Bearer token as anthropic SDKs 2.x send it) and required headers
  (Anthropic's ``anthropic-version``);
- :meth:`~Dialect.read`: the raw body into a :class:`~chainfleet.sim.call.Call` (:func:`read_json`
  refuses what is not UTF-8 JSON, with a lone surrogate, or nested too deeply, then
  :meth:`~Dialect.parse`: every field the wrong type is a ``Failure`` naming it, never a 500).
  :meth:`~Dialect.parse` reads a decoded body into a :class:`~chainfleet.sim.call.Call`: the
  conversation and tools through :mod:`chainfleet.sim.messages` (the prompt is the user,
  assistant and tool texts joined by a blank line, the system text the system and developer
  texts likewise), ``stream``, and a request for structured output (OpenAI
  ``response_format``, Anthropic ``tools`` with a forced ``tool_choice``, see
  :mod:`chainfleet.sim.structured`);
- :meth:`~Dialect.answer`: the reply body (text, or tool calls: OpenAI ``tool_calls`` with
  ``finish_reason: tool_calls``, Anthropic ``tool_use`` blocks with ``stop_reason: tool_use``)
  with its ``usage``; :meth:`~Dialect.stream`: that body as server-sent events
  (:mod:`chainfleet.sim.stream`);
- :meth:`~Dialect.error`: a :class:`~chainfleet.sim.call.Failure` as the provider words it,
  from the tables below (OpenAI answers a bad body 422, Anthropic 400; a spent quota is
  OpenAI's 429 ``insufficient_quota`` and Anthropic's 400 "credit balance is too low");
- the headers: request ids, and the rate-limit and retry headers of :mod:`chainfleet.sim.limits`.

Example::

    dialect = OpenAI()
    call = dialect.parse({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
    status, body = dialect.error(Failure("model_not_found", model="gpt-5"))   # 404, {"error": ...}
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from chainfleet.sim import messages, stream
from chainfleet.sim.call import Call, Failure, Reply, mask
from chainfleet.sim.limits import (
    RateLimits,
    anthropic_limit_headers,
    openai_limit_headers,
    openai_retry_headers,
    retry_headers,
)
from chainfleet.sim.structured import AskError, StructuredAsk, anthropic_ask, openai_ask

__all__ = [
    "ANTHROPIC_CONTEXT_WINDOW",
    "DEFAULT_MAX_TOKENS",
    "OPENAI_CONTEXT_WINDOW",
    "Anthropic",
    "Dialect",
    "OpenAI",
    "read_json",
    "structured_ask",
    "wants_stream",
]

#: OpenAI's answer to P + max_tokens above it is 400 context_length_exceeded
OPENAI_CONTEXT_WINDOW = 128_000
#: Anthropic's: 400 "prompt is too long"
ANTHROPIC_CONTEXT_WINDOW = 200_000
#: what an OpenAI request without max_tokens (or max_completion_tokens) may generate
DEFAULT_MAX_TOKENS = 1024


# --- the dialects -------------------------------------------------------------------------------


class Dialect:
    """What differs between the two routes: auth, body, answer, errors, headers."""

    name = ""
    context_window = 0

    def authorize(self, request: web.Request, api_keys: tuple[str, ...]) -> None:
        """Raise the failure for a missing key, one not in ``api_keys`` (when given) or a missing
        required header: what both a completion and a batch request check first."""
        key = self.api_key(request)
        if not key:
            raise Failure("missing_key")
        if api_keys and key not in api_keys:
            raise Failure("invalid_key", masked=mask(key))
        self.check_headers(request)

    def api_key(self, request: web.Request) -> str:
        raise NotImplementedError

    def check_headers(self, request: web.Request) -> None:
        """Raise a failure for a missing required header."""

    def read(self, raw: bytes) -> Call:
        """The request body as sent into a :class:`Call`; a ``bad_body`` failure naming what is
        wrong for anything else (the one way the server reads a completion request)."""
        return self.parse(read_json(raw))

    def parse(self, body: Any) -> Call:
        """A decoded body (from :func:`read_json`) into a :class:`Call`."""
        raise NotImplementedError

    def answer(self, call: Call, reply: Reply, number: int) -> dict[str, Any]:
        """The answer body to ``call``: ``reply``'s text or tool calls, and the usage."""
        raise NotImplementedError

    def stream(self, call: Call, body: dict[str, Any]) -> list[bytes]:
        """The answer ``body`` as the server-sent events of ``stream: true``."""
        raise NotImplementedError

    def error(self, failure: Failure) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def id_headers(self, number: int) -> dict[str, str]:
        raise NotImplementedError

    def limit_headers(self, limits: RateLimits) -> dict[str, str]:
        raise NotImplementedError

    def retry_headers(self, wait: float) -> dict[str, str]:
        return retry_headers(wait)


class OpenAI(Dialect):
    """``POST /v1/chat/completions``."""

    name = "openai"
    context_window = OPENAI_CONTEXT_WINDOW

    def api_key(self, request: web.Request) -> str:
        return _bearer(request)

    def parse(self, body: Any) -> Call:
        model = messages.model_of(body)
        system, prompt, talk = messages.chat(body)
        tokens = body.get("max_completion_tokens")
        name = "max_completion_tokens"
        if tokens is None:
            tokens, name = body.get("max_tokens"), "max_tokens"
        max_tokens = DEFAULT_MAX_TOKENS if tokens is None else messages.max_tokens_of(tokens, name)
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        ask = structured_ask(lambda b, p: openai_ask(b, p, system=system), body, prompt)
        return Call(model, system, prompt, max_tokens, ask, talk, wants_stream(body), usage)

    def answer(self, call: Call, reply: Reply, number: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        finish = "stop"
        if reply.calls:
            message["content"], finish = None, "tool_calls"
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": _json(c.arguments)},
                }
                for c in reply.calls
            ]
        return {
            "id": f"chatcmpl-sim-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": reply.tokens,
                "total_tokens": call.prompt_tokens + reply.tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        }

    def stream(self, call: Call, body: dict[str, Any]) -> list[bytes]:
        return stream.chat_events(body, include_usage=call.include_usage)

    def error(self, failure: Failure) -> tuple[int, dict[str, Any]]:
        status, kind, code, template = _OPENAI_ERRORS[failure.kind]
        status = _error_status(failure, status)
        if failure.kind == "status" and status < 500:
            kind = "invalid_request_error"
        message = template.format(**failure.fields)
        return status, {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def id_headers(self, number: int) -> dict[str, str]:
        return {"x-request-id": f"req_sim_{number}"}

    def limit_headers(self, limits: RateLimits) -> dict[str, str]:
        return openai_limit_headers(limits)

    def retry_headers(self, wait: float) -> dict[str, str]:
        return openai_retry_headers(wait)


class Anthropic(Dialect):
    """``POST /v1/messages``."""

    name = "anthropic"
    context_window = ANTHROPIC_CONTEXT_WINDOW

    def api_key(self, request: web.Request) -> str:
        # x-api-key is the documented header; anthropic SDKs from 2.x send the key as a Bearer token
        return request.headers.get("x-api-key", "").strip() or _bearer(request)

    def check_headers(self, request: web.Request) -> None:
        if not request.headers.get("anthropic-version"):
            raise Failure("missing_version")

    def parse(self, body: Any) -> Call:
        model = messages.model_of(body)
        if "max_tokens" not in body:
            raise Failure("bad_body", detail="max_tokens: Field required")
        max_tokens = messages.max_tokens_of(body["max_tokens"], "max_tokens")
        system, prompt, talk = messages.anthropic(body)
        ask = structured_ask(anthropic_ask, body, prompt)
        return Call(model, system, prompt, max_tokens, ask, talk, wants_stream(body))

    def answer(self, call: Call, reply: Reply, number: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}]
        stop = "end_turn"
        if reply.calls:
            content = [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in reply.calls
            ]
            stop = "tool_use"
        elif call.ask is not None and call.ask.mode == "tool":
            tool = {"type": "tool_use", "id": f"toolu_sim_{number}", "name": call.ask.name}
            content, stop = [{**tool, "input": json.loads(reply.text)}], "tool_use"
        return {
            "id": f"msg_sim_{number}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": call.prompt_tokens,
                "output_tokens": reply.tokens,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }

    def stream(self, call: Call, body: dict[str, Any]) -> list[bytes]:
        return stream.anthropic_events(body)

    def error(self, failure: Failure) -> tuple[int, dict[str, Any]]:
        status, kind, template = _ANTHROPIC_ERRORS[failure.kind]
        status = _error_status(failure, status)
        if failure.kind == "status":
            fallback = "api_error" if status >= 500 else "invalid_request_error"
            kind = _ANTHROPIC_STATUS_TYPES.get(status, fallback)
        message = template.format(**failure.fields)
        return status, {"type": "error", "error": {"type": kind, "message": message}}

    def id_headers(self, number: int) -> dict[str, str]:
        return {"request-id": f"req_sim_{number}"}

    def limit_headers(self, limits: RateLimits) -> dict[str, str]:
        return anthropic_limit_headers(limits)


# --- reading a request --------------------------------------------------------------------------


#: a UTF-16 surrogate on its own: JSON's ``"\\ud800"`` decodes to one, UTF-8 cannot carry it
_SURROGATE = re.compile("[\ud800-\udfff]")


def read_json(raw: bytes, *, kind: str = "bad_body", where: str = "the body") -> Any:
    """The JSON value of ``raw``, or a ``Failure(kind)`` naming what is wrong with it.

    Refused: bytes that are not UTF-8, text that is not JSON (``NaN`` and ``Infinity`` too),
    nesting too deep to decode, and a lone surrogate in a string (``"\\ud800"``): no prompt,
    model name or key can carry one, and UTF-8 cannot encode it. ``where`` starts each message
    (a batch input file says which line).

    >>> read_json(b'{"model": "m"}')
    {'model': 'm'}
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Failure(kind, detail=f"{where} is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        reason = str(exc)
        if isinstance(exc, json.JSONDecodeError):
            reason = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise Failure(kind, detail=f"{where} is not valid JSON: {reason}") from None
    except RecursionError:
        raise Failure(kind, detail=f"{where} is not valid JSON: it nests too deeply") from None
    path = _lone_surrogate(value)
    if path is not None:
        name = f"{where}, at {path}" if path else where
        raise Failure(kind, detail=f"{name}: a lone surrogate (\\ud800-\\udfff) is not valid Unicode")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _lone_surrogate(value: Any) -> str | None:
    """Where in ``value`` a string (or a key) holds a lone surrogate ("messages.0.content"),
    or None. A loop, not recursion: the value may nest as deep as the decoder allows."""
    todo: list[tuple[str, Any]] = [("", value)]
    while todo:
        path, item = todo.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                at = f"{path}.{key}" if path else key
                if _SURROGATE.search(key):
                    return f"a key in {path}" if path else "a key"
                todo.append((at, child))
        elif isinstance(item, list):
            todo.extend((f"{path}.{i}" if path else str(i), child) for i, child in enumerate(item))
    return None


def _bearer(request: web.Request) -> str:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def wants_stream(body: dict[str, Any]) -> bool:
    """Whether the body asks for server-sent events (``stream: true``)."""
    value = body.get("stream")
    if value is not None and not isinstance(value, bool):
        raise Failure("bad_body", detail="stream: must be true or false")
    return value is True


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def structured_ask(
    ask: Callable[[dict[str, Any], str], StructuredAsk | None], body: dict[str, Any], prompt: str
) -> StructuredAsk | None:
    """How a request asks for JSON; one the real API would refuse is a 400 here too."""
    try:
        return ask(body, prompt)
    except AskError as exc:
        raise Failure("bad_request", detail=str(exc)) from None


# --- error tables -------------------------------------------------------------------------------

#: kind -> (status, type, code, message template)
_OPENAI_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "missing_key": (
        401,
        "invalid_request_error",
        None,
        "You didn't provide an API key. You need to provide your API key in an Authorization header "
        "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    ),
    "invalid_key": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: {masked}."),
    "model_not_found": (
        404,
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    "bad_body": (422, "invalid_request_error", None, "Invalid request: {detail}"),
    "bad_request": (400, "invalid_request_error", None, "Bad request: {detail}"),
    "context": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is {window} tokens. However, you requested {total} tokens "
        "({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of "
        "the messages or completion.",
    ),
    "rate_requests": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit {limit}, Used {used}, Requested {requested}. "
        "Please try again in {wait}.",
    ),
    "rate_tokens": (
        429,
        "tokens",
        "rate_limit_exceeded",
        "Rate limit reached for tokens per min (TPM): Limit {limit}, Used {used}, Requested {requested}. "
        "Please try again in {wait}.",
    ),
    "rate_trigger": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests (simulated by [[sim:429]]). Please try again in 1s.",
    ),
    "too_large": (
        429,
        "tokens",
        "rate_limit_exceeded",
        "Request too large for {model} on tokens per min (TPM): Limit {limit}, Requested {requested}. "
        "The input or output tokens must be reduced in order to run successfully.",
    ),
    "quota": (
        429,
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "content_filter": (
        400,
        "invalid_request_error",
        "content_filter",
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
    ),
    "server_error": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "overloaded": (503, "server_error", None, "The server is overloaded or not ready yet."),
    "busy": (
        503,
        "server_error",
        None,
        "Server busy: {limit} requests already in flight. Try again shortly.",
    ),
    "status": (500, "server_error", None, "Error: {detail}"),
}

#: kind -> (status, type, message template)
_ANTHROPIC_ERRORS: dict[str, tuple[int, str, str]] = {
    "missing_key": (401, "authentication_error", "x-api-key header is required"),
    "invalid_key": (401, "authentication_error", "invalid x-api-key"),
    "missing_version": (400, "invalid_request_error", "anthropic-version: header is required"),
    "model_not_found": (404, "not_found_error", "model: {model}"),
    "bad_body": (400, "invalid_request_error", "{detail}"),
    "bad_request": (400, "invalid_request_error", "{detail}"),
    "context": (
        400,
        "invalid_request_error",
        "prompt is too long: {prompt_tokens} tokens + {max_tokens} max_tokens > {window} maximum",
    ),
    "rate_requests": (
        429,
        "rate_limit_error",
        "This request would exceed your rate limit of {limit} requests per minute. "
        "Please try again in {wait}.",
    ),
    "rate_tokens": (
        429,
        "rate_limit_error",
        "This request would exceed your rate limit of {limit} input and output tokens per minute. "
        "Please try again in {wait}.",
    ),
    "rate_trigger": (
        429,
        "rate_limit_error",
        "Rate limited (simulated by [[sim:429]]). Please try again in 1s.",
    ),
    "too_large": (
        429,
        "rate_limit_error",
        "Request too large for {model}: {requested} tokens exceeds your rate limit of {limit} input and "
        "output tokens per minute.",
    ),
    "quota": (
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API. "
        "Please go to Plans & Billing to upgrade or purchase credits.",
    ),
    "content_filter": (400, "invalid_request_error", "Output blocked by content filtering policy"),
    "server_error": (500, "api_error", "Internal server error"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "busy": (503, "overloaded_error", "Server busy: {limit} requests already in flight. Try again shortly."),
    "status": (500, "api_error", "{detail}"),
}

_ANTHROPIC_STATUS_TYPES = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
}


def _error_status(failure: Failure, default: int) -> int:
    return failure.status if failure.status is not None else default
