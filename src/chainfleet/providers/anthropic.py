"""Anthropic's Messages API through the official ``anthropic`` SDK's async client.

As for OpenAI: the SDK's retries are off, raw headers are read for the rate-limit feedback, and
the SDK is imported only when an Anthropic model is used.

A request with a schema and ``structured: json_schema`` forces a tool call: one tool whose
``input_schema`` is the schema, ``tool_choice: {type: tool, name}``, and the tool's input is the
reply (as JSON text). A tool's input is always an object, so a schema whose root is not an object
is wrapped as ``{value: SCHEMA}`` and unwrapped again. With ``json_object`` or ``prompt`` (which
Anthropic has no JSON mode for) nothing is added: the stage has put the schema in the prompt.

An agent's turn (:func:`anthropic_messages`) sends the conversation as Messages content blocks:
an assistant's calls as ``tool_use`` blocks, their results as ``tool_result`` blocks (with
``is_error``) in the next user message; the tools as ``{name, description, input_schema}``. The
reply's ``tool_use`` blocks come back as :class:`~chainfleet.providers.base.ToolCall` s. A turn
that offers tools leaves the choice to the model (``auto``); an agent's contract is asked for on
a turn without tools (the agent's repair turn), where the answer tool above is forced: a forced
final tool.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from chainfleet.errors import ContentFiltered, ServerError
from chainfleet.limits.headers import keep_headers
from chainfleet.providers._errors import call_sdk
from chainfleet.providers._errors import scrub as scrub_secret
from chainfleet.providers.base import Completion, CompletionRequest, Provider, ToolCall

if TYPE_CHECKING:
    import anthropic

__all__ = ["AnthropicProvider", "anthropic_messages", "forced_tool"]

_WRAP = "value"


def forced_tool(request: CompletionRequest) -> tuple[dict[str, Any], bool] | None:
    """The one tool a structured request forces, and whether its schema was wrapped (None: no
    tool: no schema, or the schema is asked for in the prompt)."""
    if request.schema is None or request.structured != "json_schema":
        return None
    schema: Mapping[str, Any] = request.schema
    wrapped = schema.get("type") != "object"
    if wrapped:
        schema = {"type": "object", "properties": {_WRAP: dict(schema)}, "required": [_WRAP]}
    name = request.wire_schema_name
    tool = {
        "name": name,
        "description": "Give the answer as this tool's input: it must match the input schema.",
        "input_schema": dict(schema),
    }
    return tool, wrapped


def anthropic_messages(request: CompletionRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """The request's conversation as (system, Messages API messages): tool results join the
    user turn that follows the calls, as the API wants turns to alternate."""
    system = request.system
    sent: list[dict[str, Any]] = []
    for message in request.conversation():
        role, content = message["role"], str(message.get("content") or "")
        if role == "system":
            system = content
            continue
        if role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
            blocks += [
                {"type": "tool_use", "id": c["id"], "name": c["name"], "input": dict(c["arguments"])}
                for c in message.get("tool_calls") or ()
            ]
            sent.append({"role": "assistant", "content": blocks or content})
            continue
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": content,
                     "is_error": bool(message.get("is_error"))}  # fmt: skip
        else:
            block = {"type": "text", "text": content}
        if sent and sent[-1]["role"] == "user" and isinstance(sent[-1]["content"], list):
            sent[-1]["content"].append(block)
        else:
            sent.append({"role": "user", "content": [block]})
    return system, sent


class AnthropicProvider(Provider):
    """Messages on an Anthropic-style endpoint.

    Example::

        provider = AnthropicProvider(api_key="sk-ant-...")
        completion = await provider.complete(CompletionRequest(model="claude-sonnet-4-5", prompt="Hi"))
    """

    kind = "anthropic"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 120.0,
        name: str = "anthropic",
    ) -> None:
        import anthropic

        self.name = name
        self.base_url = base_url
        self._key = api_key
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout
        )
        # Recent SDKs dropped ``temperature`` from messages.create (newer models fix it);
        # send the stage's temperature only where the installed SDK still takes it.
        create = self._client.messages.create
        self._takes_temperature = "temperature" in inspect.signature(create).parameters

    def __repr__(self) -> str:  # never the key
        return f"AnthropicProvider(name={self.name!r}, base_url={self.base_url!r})"

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        """The SDK's ``AsyncAnthropic`` client (the batch adapter sends its jobs through it)."""
        return self._client

    @property
    def takes_temperature(self) -> bool:
        """Whether the installed SDK's ``messages.create`` still takes ``temperature``."""
        return self._takes_temperature

    async def call(self, make: Callable[[], Awaitable[Any]]) -> tuple[Any, dict[str, str]]:
        """One SDK call (``make`` starts a ``with_raw_response`` request): its parsed response
        and headers, or the error it maps to, the key scrubbed from every message."""
        import anthropic

        return await call_sdk(anthropic, self.name, self._key, make)

    def scrub(self, text: str) -> str:
        """``text`` with this provider's key taken out (for a message a server may echo it in)."""
        return scrub_secret(text, self._key)

    async def complete(self, request: CompletionRequest) -> Completion:
        params, forced = self.params(request)
        message, headers = await self.call(lambda: self._client.messages.with_raw_response.create(**params))
        return self.completion_from(message, headers, forced)

    def params(self, request: CompletionRequest) -> tuple[dict[str, Any], tuple[dict[str, Any], bool] | None]:
        """The ``messages.create`` parameters for a request, and its forced answer tool."""
        system, messages = anthropic_messages(request)
        if request.messages is None:  # a plain stage: one user message, as ever
            messages = [{"role": "user", "content": request.prompt}]
        params: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens}
        params["messages"] = messages
        if self._takes_temperature:
            params["temperature"] = request.temperature
        if system:
            params["system"] = system
        forced = forced_tool(request) if not request.tools else None  # (see the module docstring)
        tools = [
            {"name": t["name"], "description": t.get("description", ""),
             "input_schema": dict(t["parameters"])}
            for t in request.tools
        ]  # fmt: skip
        if forced is not None:
            tools.append(forced[0])
            params["tool_choice"] = {"type": "tool", "name": forced[0]["name"]}
        if tools:
            params["tools"] = tools
        return params, forced

    def completion_from(
        self, message: Any, headers: Mapping[str, str], forced: tuple[dict[str, Any], bool] | None = None
    ) -> Completion:
        """Our :class:`Completion` from the SDK's ``Message`` (online, or one result of a batch);
        with ``forced`` (from :func:`forced_tool`) the text is that tool's input as JSON.
        ``ContentFiltered`` for a refusal, ``ServerError`` for a malformed message."""
        try:
            blocks = message.content
            text = "".join(b.text for b in blocks if getattr(b, "type", None) == "text")
            if forced is not None:
                text = self._tool_input(blocks, forced, text)
            calls = tuple(
                ToolCall(b.id, b.name, b.input if isinstance(b.input, dict) else {"_unparsed": b.input})
                for b in blocks
                if forced is None and getattr(b, "type", None) == "tool_use"
            )
            usage = message.usage
        except (AttributeError, TypeError) as exc:
            raise ServerError(f"{self.name}: malformed response: no content") from exc
        if getattr(message, "stop_reason", None) == "refusal":
            raise ContentFiltered(f"{self.name}: the model refused (stop_reason=refusal)")
        return Completion(
            text=text,
            input_tokens=getattr(usage, "input_tokens", 0) or 0,
            output_tokens=getattr(usage, "output_tokens", 0) or 0,
            cached_tokens=getattr(usage, "cache_read_input_tokens", 0) or 0,
            model=getattr(message, "model", None),
            headers=keep_headers(headers),
            tool_calls=calls,
            finish_reason=getattr(message, "stop_reason", None),
        )

    def _tool_input(self, blocks: Any, forced: tuple[dict[str, Any], bool], text: str) -> str:
        """The forced tool's input as JSON text; without a tool call, the text (which the
        stage's repair then judges)."""
        tool, wrapped = forced
        for block in blocks:
            if getattr(block, "type", None) == "tool_use" and getattr(block, "name", None) == tool["name"]:
                value = block.input
                if wrapped and isinstance(value, dict) and _WRAP in value:
                    value = value[_WRAP]
                return json.dumps(value, ensure_ascii=False)
        return text

    async def aclose(self) -> None:
        await self._client.close()
