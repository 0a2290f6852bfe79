"""Anthropic's Message Batches API through the official ``anthropic`` SDK.

A chunk goes in one ``messages.batches.create(requests=[...])`` (no file to upload), is watched
with ``messages.batches.retrieve`` until ``processing_status`` is ``ended``, and read with
``messages.batches.results``: one line per request, ``succeeded`` (a message), ``errored`` (an
error of the Messages API's types), ``expired`` or ``canceled``. A request's ``params`` are
the online call's (:meth:`AnthropicProvider.params`), so an agent's turn carries its
``tool_use`` / ``tool_result`` conversation and tools, and its reply's ``tool_use`` blocks come
back as tool calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from chainfleet.errors import CallError, ConfigError, ConnectionFailed, ServerError, Timeout
from chainfleet.providers._errors import classify
from chainfleet.providers.anthropic import AnthropicProvider, forced_tool
from chainfleet.providers.base import CompletionRequest
from chainfleet.providers.batch.base import BatchAdapter, BatchExpired, BatchItem, BatchStatus, Outcome

__all__ = ["AnthropicBatchAdapter"]

#: the Messages API's error types and the status each comes with
_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicBatchAdapter(BatchAdapter):
    """Message Batches on an Anthropic-style endpoint, through the provider's client (and its error
    mapping)."""

    max_requests = 100_000
    max_bytes = 256 * 2**20

    def __init__(self, provider: AnthropicProvider) -> None:
        self.provider = provider
        self.name = provider.name
        self._client = provider.client
        #: the forced tool of each structured request expected, by custom id, until its result is read
        self._forced: dict[str, tuple[dict[str, Any], bool]] = {}

    async def _call(self, make: Any) -> Any:
        parsed, _ = await self.provider.call(make)
        return parsed

    def line(self, item: BatchItem) -> dict[str, Any]:
        """The request's ``params`` as an online call sends them (an agent's turn: its
        conversation as content blocks and its tools; a structured stage's forced tool)."""
        params, _ = self.provider.params(item.request)
        return {"custom_id": item.custom_id, "params": params}

    def expect(self, custom_id: str, request: CompletionRequest) -> None:
        """Keep the forced tool of a structured request, to read its reply (a resumed batch's
        requests never had their lines built in this process). An agent's turn that offers
        tools forces none, as online."""
        forced = forced_tool(request) if not request.tools else None
        if forced is not None:
            self._forced[custom_id] = forced

    async def check(self) -> None:
        try:
            await self._call(lambda: self._client.messages.batches.with_raw_response.list(limit=1))
        except CallError as exc:
            where = self.provider.base_url or "api.anthropic.com"
            if exc.status in (404, 405, 501):
                raise ConfigError(
                    f"the endpoint {where} has no Message Batches API (GET /v1/messages/batches "
                    f"answered {exc.status}); run this stage online"
                ) from None
            raise ConfigError(f"cannot use the batch API at {where}: {exc}") from None

    async def create(self, chunk: list[BatchItem], file_id: str | None, *, chunk_id: str) -> str:
        requests = [self.line(item) for item in chunk]
        batch = await self._call(
            lambda: self._client.messages.batches.with_raw_response.create(requests=requests),  # type: ignore[arg-type]
        )
        return str(batch.id)

    async def poll(self, batch_id: str) -> BatchStatus:
        batch = await self._call(lambda: self._client.messages.batches.with_raw_response.retrieve(batch_id))
        c = batch.request_counts
        counts = {
            "processing": c.processing,
            "succeeded": c.succeeded,
            "errored": c.errored,
            "canceled": c.canceled,
            "expired": c.expired,
        }
        state = str(batch.processing_status)
        return BatchStatus(state=state, ended=state == "ended", counts=counts)

    async def results(self, batch_id: str, status: BatchStatus) -> AsyncIterator[tuple[str, Outcome]]:
        import anthropic

        try:
            decoder = await self._client.messages.batches.results(batch_id)
            async for line in decoder:
                custom_id = str(line.custom_id)
                yield custom_id, self._outcome(line.result, self._forced.pop(custom_id, None))
        except anthropic.APITimeoutError as exc:
            raise Timeout(f"{self.name}: reading the batch results timed out") from exc
        except anthropic.APIConnectionError as exc:
            message = self.provider.scrub(str(exc))
            raise ConnectionFailed(f"{self.name}: connection failed: {message}") from exc
        except anthropic.APIStatusError as exc:
            raise classify(exc.status_code, self.provider.scrub(exc.message), provider=self.name) from exc

    def _outcome(self, result: Any, forced: tuple[dict[str, Any], bool] | None = None) -> Outcome:
        kind = getattr(result, "type", None)
        if kind == "succeeded":
            try:
                return self.provider.completion_from(result.message, {}, forced)
            except CallError as exc:
                return exc
        if kind == "errored":
            inner = getattr(getattr(result, "error", None), "error", None)
            error_type = str(getattr(inner, "type", "api_error"))
            message = str(getattr(inner, "message", "") or error_type)
            status = _STATUS.get(error_type, 500)
            return classify(status, self.provider.scrub(message), kind=error_type, provider=self.name)
        if kind in ("expired", "canceled"):
            return BatchExpired(f"{self.name} batch: the request {kind} before it was processed")
        return ServerError(f"{self.name}: unknown batch result type {kind!r}")
