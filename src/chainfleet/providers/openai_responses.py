"""OpenAI's Responses API (``POST /v1/responses``) behind the same provider interface as chat
completions: a named endpoint with ``api: responses`` calls it.

Why a second door to the same provider: the Responses API is where OpenAI puts its newer models'
features, and some OpenAI-compatible servers speak it; a pipeline picks it per endpoint::

    providers:
      oai: {kind: openai, api: responses, api_key_env: OPENAI_API_KEY}
    model: oai:gpt-4o-mini

What is sent (the whole conversation every turn, ``store: false``: chainfleet keeps the
conversation itself, in its run store, so a resumed item needs no server-side state):

- the first system message as ``instructions``; the others as ``input`` items: a user's or
  assistant's text as a ``message`` item, an assistant's tool calls as ``function_call`` items
  (``call_id``, ``name``, ``arguments`` as a JSON string), each tool result as a
  ``function_call_output`` item with the same ``call_id``;
- the tools as ``{type: function, name, description, parameters, strict: false}`` with
  ``parallel_tool_calls``;
- a schema as ``text.format`` (``json_schema`` strict, or ``json_object``), as chat's
  ``response_format`` would ask;
- ``max_output_tokens`` and ``temperature``.

What is read: ``function_call`` items become :class:`~chainfleet.providers.base.ToolCall` s (their
``call_id`` is the id the next turn answers), the ``output_text`` parts of ``message`` items the
text, ``usage`` the tokens. A ``refusal`` part, or an ``incomplete`` response whose reason is
``content_filter``, is ``ContentFiltered``. Batch mode still goes through chat completions
(:mod:`chainfleet.providers.batch.openai`), which this class inherits unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chainfleet.errors import ContentFiltered, ServerError
from chainfleet.limits.headers import keep_headers
from chainfleet.providers.base import Completion, CompletionRequest, ToolCall
from chainfleet.providers.openai import OpenAIProvider, response_format

__all__ = ["OpenAIResponsesProvider", "responses_input", "responses_tools"]


def responses_input(request: CompletionRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """The request's conversation as (``instructions``, ``input`` items)."""
    instructions: str | None = None
    items: list[dict[str, Any]] = []
    for message in request.conversation():
        role = message["role"]
        content = str(message.get("content") or "")
        if role == "system" and instructions is None and not items:
            instructions = content
        elif role == "tool":
            call_id = message["tool_call_id"]
            items.append({"type": "function_call_output", "call_id": call_id, "output": content})
        elif role == "assistant" and message.get("tool_calls"):
            if content:
                items.append({"type": "message", "role": "assistant", "content": content})
            items.extend(
                {"type": "function_call", "call_id": c["id"], "name": c["name"],
                 "arguments": json.dumps(c["arguments"])}
                for c in message["tool_calls"]
            )  # fmt: skip
        else:
            said = "developer" if role == "system" else role  # a later system message
            items.append({"type": "message", "role": said, "content": content})
    return instructions, items


def responses_tools(request: CompletionRequest) -> list[dict[str, Any]]:
    """The request's tools as Responses ``function`` tools (flat: no nested ``function``)."""
    return [
        {"type": "function", "name": t["name"], "description": t.get("description", ""),
         "parameters": dict(t["parameters"]), "strict": False}
        for t in request.tools
    ]  # fmt: skip


def _text_format(request: CompletionRequest) -> dict[str, Any] | None:
    """Chat's ``response_format`` as the Responses API's ``text.format`` (flat json_schema)."""
    fmt = response_format(request)
    if fmt is None:
        return None
    if fmt["type"] != "json_schema":
        return {"format": {"type": fmt["type"]}}
    return {"format": {"type": "json_schema", **fmt["json_schema"]}}


def _arguments(text: str | None) -> dict[str, Any]:
    """A function call's arguments; not a JSON object: ``{"_unparsed": TEXT}``, which the tool's
    schema refuses (the model is told), as for chat completions."""
    try:
        arguments = json.loads(text or "{}")
    except ValueError:
        arguments = None
    return arguments if isinstance(arguments, dict) else {"_unparsed": text or ""}


class OpenAIResponsesProvider(OpenAIProvider):
    """An OpenAI-style endpoint called through ``/v1/responses``.

    Example::

        provider = OpenAIResponsesProvider(api_key="sk-...")
        completion = await provider.complete(CompletionRequest(model="gpt-4o-mini", prompt="Hi"))
    """

    api = "responses"

    def __repr__(self) -> str:  # never the key
        return f"OpenAIResponsesProvider(name={self.name!r}, base_url={self.base_url!r})"

    async def complete(self, request: CompletionRequest) -> Completion:
        instructions, items = responses_input(request)
        params: dict[str, Any] = {
            "model": request.model,
            "input": items,
            "max_output_tokens": request.max_tokens,
            "temperature": request.temperature,
            "store": False,
        }
        if instructions is not None:
            params["instructions"] = instructions
        text = _text_format(request)
        if text is not None:
            params["text"] = text
        if request.tools:
            params["tools"] = responses_tools(request)
            params["parallel_tool_calls"] = True
        response, headers = await self.call(lambda: self._client.responses.with_raw_response.create(**params))
        return self.response_from(response, headers)

    def response_from(self, response: Any, headers: Mapping[str, str]) -> Completion:
        """Our :class:`Completion` from the SDK's ``Response``."""
        try:
            output = list(response.output)
            usage = response.usage
        except (AttributeError, TypeError) as exc:
            raise ServerError(f"{self.name}: malformed response: no output") from exc
        incomplete = getattr(response, "incomplete_details", None)
        if getattr(incomplete, "reason", None) == "content_filter":
            raise ContentFiltered(f"{self.name}: the output was filtered (incomplete: content_filter)")
        calls: list[ToolCall] = []
        texts: list[str] = []
        for item in output:
            kind = getattr(item, "type", None)
            if kind == "function_call":
                calls.append(ToolCall(item.call_id, item.name, _arguments(item.arguments)))
            elif kind == "message":
                for part in getattr(item, "content", None) or ():
                    if getattr(part, "type", None) == "refusal":
                        refusal = self.scrub(str(part.refusal))
                        raise ContentFiltered(f"{self.name}: the model refused: {refusal}")
                    if getattr(part, "type", None) == "output_text":
                        texts.append(part.text)
        if not calls and not texts:
            raise ServerError(f"{self.name}: malformed response: no message or function call in the output")
        details = getattr(usage, "input_tokens_details", None)
        return Completion(
            text="".join(texts),
            input_tokens=getattr(usage, "input_tokens", 0) or 0,
            output_tokens=getattr(usage, "output_tokens", 0) or 0,
            cached_tokens=(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0,
            model=getattr(response, "model", None),
            headers=keep_headers(headers),
            tool_calls=tuple(calls),
        )
