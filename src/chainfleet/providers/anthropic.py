"""Anthropic's Messages API through the official ``anthropic`` SDK's async client.

As for OpenAI: the SDK's retries are off, raw headers are read for the rate-limit feedback, and
the SDK is imported only when an Anthropic model is used.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ContentFiltered, ServerError
from ..headers import keep_headers
from ._errors import call_sdk
from .base import Completion, CompletionRequest, Provider

__all__ = ["AnthropicProvider"]


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

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r}, base_url={self.base_url!r})"

    async def complete(self, request: CompletionRequest) -> Completion:
        import anthropic

        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if self._takes_temperature:
            params["temperature"] = request.temperature
        if request.system:
            params["system"] = request.system
        message, headers = await call_sdk(
            anthropic,
            self.name,
            self._key,
            lambda: self._client.messages.with_raw_response.create(**params),
        )
        return self._completion(message, headers)

    def _completion(self, message: Any, headers: dict[str, str]) -> Completion:
        try:
            blocks = message.content
            text = "".join(b.text for b in blocks if getattr(b, "type", None) == "text")
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
        )

    async def aclose(self) -> None:
        await self._client.close()
