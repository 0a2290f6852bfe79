"""What the gateway reads from a model request and its answer, whatever client sent it.

The user's own chain talks to its provider through an SDK (openai, anthropic, LangChain, the
OpenAI Agents SDK, pydantic-ai, or curl through the ``exec`` proxy); the gateway sees only the
HTTP request. This module reads what it needs from it:

- :func:`request_hash`: the journal's key of a request: a hash of the method, the path and the
  JSON body with its keys sorted (so two clients that order keys differently are the same call);
- :func:`read_target`: which API it is (OpenAI chat completions, responses, embeddings, or
  Anthropic messages, by the path's end), the model, whether it streams, and the tokens to
  reserve before it goes (the prompt's estimate plus the most it may write);
- :func:`usage_of`: the tokens it really used, from the JSON body's ``usage`` or, for a stream,
  from the server-sent events that carry it (OpenAI's last chunk, ``response.completed``,
  Anthropic's ``message_start`` and ``message_delta``).

Example::

    target = read_target("/v1/chat/completions", body)
    target.provider, target.model, target.estimate  # ("openai", "gpt-4o-mini", 1032)
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from chainfleet.limits import estimate_tokens

__all__ = ["Target", "Usage", "decode_json", "read_target", "request_hash", "usage_of"]

#: "not decoded yet": :func:`request_hash` and :func:`read_target` decode the body themselves
_UNREAD: Any = object()

#: the path endings the gateway understands: (provider, endpoint)
_ENDPOINTS = (
    ("/chat/completions", ("openai", "chat")),
    ("/responses", ("openai", "responses")),
    ("/embeddings", ("openai", "embeddings")),
    ("/messages", ("anthropic", "messages")),
)
#: what a call may write when the request does not say (Anthropic requires max_tokens)
DEFAULT_MAX_OUTPUT = 1024


@dataclass(frozen=True)
class Target:
    """What a request is: its provider and endpoint, the model, whether it streams, and the
    tokens to reserve for it. ``provider`` is None for a path the gateway cannot read."""

    provider: str | None
    endpoint: str | None
    model: str | None
    stream: bool = False
    estimate: int = 0

    @property
    def spec(self) -> str | None:
        """The model as chainfleet names it (``openai:gpt-4o-mini``): its limiter and price."""
        if self.provider is None or not self.model:
            return None
        return f"{self.provider}:{self.model}"


@dataclass(frozen=True)
class Usage:
    """The tokens a call used (0 when the answer did not say)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


def decode_json(body: bytes) -> Any:
    """The body as JSON, or None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def request_hash(method: str, path: str, body: bytes, value: Any = _UNREAD) -> str:
    """The journal's key of a request: method, path and the body (JSON with sorted keys).
    ``value`` is the body already decoded (:func:`decode_json`), so a caller that also reads
    its target parses it once."""
    if value is _UNREAD:
        value = decode_json(body)
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=False) if value is not None else body.hex()
    data = json.dumps([method.upper(), path, canonical], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def read_target(path: str, body: bytes, value: Any = _UNREAD) -> Target:
    """What the request to ``path`` with ``body`` is (see :class:`Target`); ``value``: the
    body already decoded, as for :func:`request_hash`."""
    found = _endpoint(path)
    if value is _UNREAD:
        value = decode_json(body)
    if found is None or not isinstance(value, Mapping):
        return Target(None, None, None)
    provider, endpoint = found
    model = value.get("model")
    model = str(model) if model else None
    stream = bool(value.get("stream"))
    prompt = _prompt_text(value)
    most = 0 if endpoint == "embeddings" else _max_output(value)
    estimate = estimate_tokens(prompt, model) + most
    return Target(provider, endpoint, model, stream, estimate)


@functools.lru_cache(maxsize=256)
def _endpoint(path: str) -> tuple[str, str] | None:
    """(provider, endpoint) of a path, or None: a client calls the same few paths every time."""
    return next((kind for end, kind in _ENDPOINTS if path.rstrip("/").endswith(end)), None)


def _prompt_text(body: Mapping[str, Any]) -> str:
    """Everything of the request the model reads, as text, for the token estimate."""
    parts = []
    for key in ("system", "instructions", "messages", "input", "tools"):
        value = body.get(key)
        if value:
            parts.append(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return "\n".join(parts)


def _max_output(body: Mapping[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_OUTPUT


def usage_of(body: bytes, *, stream: bool) -> Usage:
    """The tokens used, from a JSON answer's ``usage`` or a stream's events."""
    if not stream:
        value = decode_json(body)
        return _usage(value.get("usage")) if isinstance(value, Mapping) else Usage()
    found = Usage()
    for event in sse_events(body):
        for usage in _usages_in(event):
            found = Usage(
                max(found.input_tokens, usage.input_tokens),
                max(found.output_tokens, usage.output_tokens),
                max(found.cached_tokens, usage.cached_tokens),
            )
    return found


def sse_events(body: bytes) -> Iterator[Any]:
    """The JSON ``data:`` payloads of a server-sent event stream (``[DONE]`` and others skipped)."""
    for line in body.decode("utf-8", "replace").splitlines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if not data or data == "[DONE]":
            continue
        try:
            yield json.loads(data)
        except ValueError:
            continue


def _usages_in(event: Any) -> Iterator[Usage]:
    """Usage blocks in one event: at its top (OpenAI chat chunks, Anthropic message_delta), in
    ``response`` (``response.completed``) or ``message`` (Anthropic ``message_start``)."""
    if not isinstance(event, Mapping):
        return
    for holder in (event, event.get("response"), event.get("message")):
        if isinstance(holder, Mapping) and isinstance(holder.get("usage"), Mapping):
            yield _usage(holder["usage"])


def _usage(usage: Any) -> Usage:
    """Input, output and cached tokens in any of the three APIs' spellings."""
    if not isinstance(usage, Mapping):
        return Usage()
    tokens_in = _int(usage.get("prompt_tokens")) or _int(usage.get("input_tokens"))
    tokens_out = _int(usage.get("completion_tokens")) or _int(usage.get("output_tokens"))
    cached = _int(usage.get("cache_read_input_tokens"))
    for key in ("prompt_tokens_details", "input_tokens_details"):
        details = usage.get(key)
        if isinstance(details, Mapping):
            cached = cached or _int(details.get("cached_tokens"))
    return Usage(tokens_in, tokens_out, cached)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
