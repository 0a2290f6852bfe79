"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio), through the
official ``openai`` SDK's async client.

The SDK's own retries are off (``max_retries=0``): chainfleet owns the one retry loop. Raw
response headers are read with ``with_raw_response`` so the rate-limit headers reach the
runner. The SDK is imported when the first provider is made, not when chainfleet is.

A request with a schema asks for structure as its ``structured`` setting says: ``json_schema``
sends ``response_format`` ``{type: json_schema, json_schema: {name, schema, strict: true}}`` with
the schema adapted to strict mode's rules (:func:`chainfleet.pipeline.contracts.strict_schema`);
``json_object`` sends ``{type: json_object}`` (the stage has put the schema in the prompt, which
JSON mode also wants); ``prompt`` sends nothing extra. The reply's text is the JSON either way.

An agent's turn (:func:`chat_messages`, :func:`chat_tools`) sends the conversation as chat
messages (an assistant's ``tool_calls``, each result a ``tool`` message) and the tools as
``function`` tools with ``parallel_tool_calls``; the reply's ``tool_calls`` come back as
:class:`~chainfleet.providers.base.ToolCall` s. A ``response_format`` still asks for the final
answer's structure: the model either calls tools or answers in that format.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from chainfleet.errors import ContentFiltered, InvalidRequest, ServerError
from chainfleet.limits.headers import keep_headers
from chainfleet.pipeline.contracts import strict_schema
from chainfleet.providers._errors import call_sdk
from chainfleet.providers._errors import scrub as scrub_secret
from chainfleet.providers.base import Completion, CompletionRequest, Provider, ToolCall

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAIProvider", "chat_messages", "chat_tools", "response_format", "tool_calls_of"]


def chat_messages(request: CompletionRequest) -> list[dict[str, Any]]:
    """The request's conversation as chat completions messages."""
    sent: list[dict[str, Any]] = []
    for message in request.conversation():
        role = message["role"]
        if role == "tool":
            content = str(message.get("content") or "")
            sent.append({"role": "tool", "tool_call_id": message["tool_call_id"], "content": content})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                for c in message["tool_calls"]
            ]  # fmt: skip
            sent.append({"role": "assistant", "content": message.get("content") or None, "tool_calls": calls})
        else:
            sent.append({"role": role, "content": str(message.get("content") or "")})
    return sent


def chat_tools(request: CompletionRequest) -> list[dict[str, Any]]:
    """The request's tools as chat completions ``function`` tools."""
    return [
        {"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                          "parameters": dict(t["parameters"])}}
        for t in request.tools
    ]  # fmt: skip


def tool_calls_of(message: Any) -> tuple[ToolCall, ...]:
    """The tool calls of a chat completions reply message. Arguments that are not a JSON object
    come back as ``{"_unparsed": TEXT}``, which the tool's schema then refuses (the model is told)."""
    found = []
    for call in getattr(message, "tool_calls", None) or ():
        text = call.function.arguments or "{}"
        try:
            arguments = json.loads(text)
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            arguments = {"_unparsed": text}
        found.append(ToolCall(call.id, call.function.name, arguments))
    return tuple(found)


def response_format(request: CompletionRequest) -> dict[str, Any] | None:
    """The ``response_format`` for a request's schema and ``structured`` setting (None: none).

    Raises ``InvalidRequest`` when strict mode cannot express the schema (the pipeline refuses
    such a stage when it loads; this covers schemas given in Python at call time).
    """
    if request.schema is None or request.structured == "prompt":
        return None
    if request.structured == "json_object":
        return {"type": "json_object"}
    try:
        schema = strict_schema(request.schema)
    except ValueError as exc:
        raise InvalidRequest(f"cannot ask for this schema in strict mode: {exc}") from exc
    name = request.wire_schema_name
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


class OpenAIProvider(Provider):
    """Chat completions on an OpenAI-style endpoint.

    Example::

        provider = OpenAIProvider(api_key="sk-...", base_url="http://127.0.0.1:11434/v1")
        completion = await provider.complete(CompletionRequest(model="llama3", prompt="Hi"))
    """

    kind = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 120.0,
        name: str = "openai",
    ) -> None:
        import openai

        self.name = name
        self.base_url = base_url
        self._key = api_key
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)

    def __repr__(self) -> str:  # never the key
        return f"OpenAIProvider(name={self.name!r}, base_url={self.base_url!r})"

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The SDK's ``AsyncOpenAI`` client (the batch adapter sends its jobs through it)."""
        return self._client

    async def call(self, make: Callable[[], Awaitable[Any]]) -> tuple[Any, dict[str, str]]:
        """One SDK call (``make`` starts a ``with_raw_response`` request): its parsed response
        and headers, or the error it maps to, the key scrubbed from every message."""
        import openai

        return await call_sdk(openai, self.name, self._key, make)

    def scrub(self, text: str) -> str:
        """``text`` with this provider's key taken out (for a message a server may echo it in)."""
        return scrub_secret(text, self._key)

    async def complete(self, request: CompletionRequest) -> Completion:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": chat_messages(request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        fmt = response_format(request)
        if fmt is not None:
            params["response_format"] = fmt
        if request.tools:
            params["tools"] = chat_tools(request)
            params["parallel_tool_calls"] = True
        completion, headers = await self.call(
            lambda: self._client.chat.completions.with_raw_response.create(**params)
        )
        return self.completion_from(completion, headers)

    def completion_from(self, completion: Any, headers: Mapping[str, str]) -> Completion:
        """Our :class:`Completion` from the SDK's ``ChatCompletion`` (online, or one line of a
        batch's output); ``ContentFiltered`` for a filtered reply, ``ServerError`` for a
        malformed one."""
        try:
            choice = completion.choices[0]
            text = choice.message.content
            finish = choice.finish_reason
            usage = completion.usage
            calls = tool_calls_of(choice.message)
        except (AttributeError, IndexError, TypeError) as exc:
            raise ServerError(f"{self.name}: malformed response: no choices") from exc
        if text is None and calls and finish != "content_filter":
            text = ""
        if finish == "content_filter" or text is None:
            raise ContentFiltered(f"{self.name}: the output was filtered (finish_reason={finish})")
        cached = 0
        details = getattr(usage, "prompt_tokens_details", None)
        if details is not None:
            cached = getattr(details, "cached_tokens", 0) or 0
        return Completion(
            text=text,
            input_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            output_tokens=getattr(usage, "completion_tokens", 0) or 0,
            cached_tokens=cached,
            model=getattr(completion, "model", None),
            headers=keep_headers(headers),
            tool_calls=calls,
            finish_reason=finish,
        )

    async def aclose(self) -> None:
        await self._client.close()
