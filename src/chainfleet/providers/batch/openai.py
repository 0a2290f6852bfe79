"""OpenAI's Batch API (Files + Batches) through the official ``openai`` SDK.

A chunk is uploaded as a JSONL file (``files.create(purpose="batch")``), made a batch job on
``/v1/chat/completions`` with a 24 h window (``batches.create``), watched with
``batches.retrieve`` and read back with ``files.content``. A line is the body an online call
sends (an agent's turn: its conversation and its tools as ``function`` tools; the results'
``tool_calls`` come back as online): the output file holds the answered
requests, the error file the failed ones and, for an expired batch, the ones it never reached
(``batch_expired``). Errors map through the same table as one-call requests
(:mod:`chainfleet.providers._errors`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final

from chainfleet.errors import CallError, ConfigError, ModelNotFound, ServerError
from chainfleet.providers._errors import classify, error_fields
from chainfleet.providers.batch.base import BatchAdapter, BatchExpired, BatchItem, BatchStatus, Outcome
from chainfleet.providers.openai import OpenAIProvider, chat_messages, chat_tools, response_format

__all__ = ["OpenAIBatchAdapter"]

ENDPOINT: Final = "/v1/chat/completions"
_ENDED = {"completed", "expired", "failed", "cancelled"}


class OpenAIBatchAdapter(BatchAdapter):
    """Batch jobs on an OpenAI-style endpoint, through the provider's client (and its error mapping)."""

    max_requests = 50_000
    max_bytes = 200 * 2**20

    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider
        self.name = provider.name
        self._client = provider.client

    async def _call(self, make: Any) -> Any:
        parsed, _ = await self.provider.call(make)
        return parsed

    def line(self, item: BatchItem) -> dict[str, Any]:
        r = item.request
        body: dict[str, Any] = {
            "model": r.model,
            "messages": chat_messages(r),  # an agent's turn: the conversation so far
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
        }
        fmt = response_format(r)  # a structured stage asks as it does online
        if fmt is not None:
            body["response_format"] = fmt
        if r.tools:  # an agent's turn offers its tools, as online
            body["tools"] = chat_tools(r)
            body["parallel_tool_calls"] = True
        return {"custom_id": item.custom_id, "method": "POST", "url": ENDPOINT, "body": body}

    async def check(self) -> None:
        try:
            await self._call(lambda: self._client.batches.with_raw_response.list(limit=1))
        except CallError as exc:
            where = self.provider.base_url or "api.openai.com"
            if exc.status in (404, 405, 501):
                raise ConfigError(
                    f"the endpoint {where} has no batch API (GET /v1/batches answered {exc.status}); "
                    "run this stage online (no --batch / mode: online)"
                ) from None
            raise ConfigError(f"cannot use the batch API at {where}: {exc}") from None

    async def upload(self, chunk: list[BatchItem]) -> str | None:
        data = "".join(json.dumps(self.line(item), ensure_ascii=False) + "\n" for item in chunk).encode()
        uploaded = await self._call(
            lambda: self._client.files.with_raw_response.create(
                file=("chainfleet-batch.jsonl", data), purpose="batch"
            )
        )
        return str(uploaded.id)

    async def create(self, chunk: list[BatchItem], file_id: str | None, *, chunk_id: str) -> str:
        if file_id is None:
            raise ServerError(f"{self.name}: no input file for the batch")
        batch = await self._call(
            lambda: self._client.batches.with_raw_response.create(
                input_file_id=file_id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={"chainfleet_chunk": chunk_id},
            )
        )
        return str(batch.id)

    async def find(self, chunk_id: str, *, since: float) -> str | None:
        """The batch whose ``metadata.chainfleet_chunk`` is ``chunk_id``: the list is newest
        first, so paging stops at batches created before ``since`` (less a minute of clock
        skew), or after 20 pages."""
        after: str | None = None
        for _ in range(20):
            page = await self._call(self._lister(after))
            data = list(page.data)
            for batch in data:
                if (batch.metadata or {}).get("chainfleet_chunk") == chunk_id:
                    return str(batch.id)
            if not data or not page.has_more or min(b.created_at for b in data) < since - 60:
                return None
            after = str(data[-1].id)
        return None

    def _lister(self, after: str | None) -> Any:
        """One page of ``batches.list``, newest first, after the batch id ``after``."""
        batches = self._client.batches.with_raw_response
        if after is None:
            return lambda: batches.list(limit=100)
        return lambda: batches.list(limit=100, after=after)

    async def poll(self, batch_id: str) -> BatchStatus:
        batch = await self._call(lambda: self._client.batches.with_raw_response.retrieve(batch_id))
        state = str(batch.status)
        counts = batch.request_counts
        numbers = (
            {}
            if counts is None
            else {"total": counts.total, "completed": counts.completed, "failed": counts.failed}
        )
        files = {"output": batch.output_file_id, "error": batch.error_file_id}
        failed = state == "failed" or (state in _ENDED and not any(files.values()))
        error = _batch_error(self.name, batch_id, state, batch.errors) if failed else None
        return BatchStatus(
            state=state, ended=state in _ENDED, failed=failed, counts=numbers, error=error, files=files
        )

    async def results(self, batch_id: str, status: BatchStatus) -> AsyncIterator[tuple[str, Outcome]]:
        for file_id in (status.files.get("output"), status.files.get("error")):
            if not file_id:
                continue
            content = await self._call(lambda fid=file_id: self._client.files.with_raw_response.content(fid))
            for text in content.text.splitlines():
                if text.strip():
                    yield self._outcome(json.loads(text))

    def _outcome(self, line: dict[str, Any]) -> tuple[str, Outcome]:
        import openai.types.chat

        custom_id = str(line.get("custom_id"))
        error = line.get("error")
        if error:
            reason = str(error.get("code") or "")
            message = f"{self.name} batch: {error.get('message') or reason}"
            if reason in ("batch_expired", "batch_cancelled"):
                return custom_id, BatchExpired(message)
            return custom_id, ServerError(message)
        response = line.get("response") or {}
        status, body = int(response.get("status_code") or 500), response.get("body")
        if status != 200:
            text, code, kind = error_fields(body)
            return custom_id, classify(status, text, code=code, kind=kind, provider=self.name)
        try:
            completion = openai.types.chat.ChatCompletion.model_validate(body)
            return custom_id, self.provider.completion_from(completion, {})
        except CallError as exc:
            return custom_id, exc
        except ValueError:
            return custom_id, ServerError(f"{self.name}: malformed batch result for {custom_id}")


def _batch_error(name: str, batch_id: str, state: str, errors: Any) -> CallError:
    """Why a whole batch ended without results: an unknown model stops the run; anything else
    sends its requests into a new batch."""
    data = getattr(errors, "data", None) or []
    first = data[0] if data else None
    code = str(getattr(first, "code", "") or "")
    message = str(getattr(first, "message", "") or state)
    text = f"{name}: batch {batch_id} {state}: {message}"
    if code == "model_not_found" or "does not exist" in message:
        return ModelNotFound(text, status=404)
    return BatchExpired(text)
