"""The batch interface: a provider's batch API as a peer of its one-call API.

A :class:`BatchAdapter` knows one provider's batch jobs (OpenAI Files + Batches, Anthropic
Message Batches, the built-in sim) and nothing of runs: it uploads a chunk of requests, creates
the job, reports its state and hands back one outcome per ``custom_id``. Which requests form a
chunk, when to poll, and what a result means for an item is :mod:`chainfleet.chain.batch`'s business.
Which adapter a provider gets is :func:`chainfleet.providers.batch.batch_adapter_for`'s: this
module knows no concrete adapter (they all import it).

Example::

    adapter = batch_adapter_for(provider)
    file_id = await adapter.upload(chunk)
    batch_id = await adapter.create(chunk, file_id, chunk_id="c1")
    status = await adapter.poll(batch_id)
    if status.ended:
        async for custom_id, outcome in adapter.results(batch_id, status):
            ...
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from chainfleet.errors import CallError, RetryableError
from chainfleet.providers.base import Completion, CompletionRequest

__all__ = [
    "BatchAdapter",
    "BatchExpired",
    "BatchItem",
    "BatchStatus",
    "Outcome",
]

#: what one request of a batch came to: its completion, or the error it got
Outcome = Completion | CallError


class BatchExpired(RetryableError):
    """The batch ended (expired, cancelled, failed as a whole) before this request was done:
    it goes into a new batch, and that counts as an attempt."""

    kind = "batch_expired"

    def __init__(self, message: str, *, retry_after: float | None = 0.0, status: int | None = None) -> None:
        # no wait of its own: the next chunk's window is the wait
        super().__init__(message, retry_after=retry_after, status=status)


@dataclass(frozen=True)
class BatchItem:
    """One request of a chunk, under the id its result will come back with."""

    custom_id: str
    request: CompletionRequest


@dataclass(frozen=True)
class BatchStatus:
    """A batch job's state as the provider reports it.

    ``state`` is the provider's word ("in_progress", "completed", "expired", "ended" ...);
    ``ended``: no more work will be done on it (its results can be read); ``failed``: it ended
    without results (a whole-batch failure: every request goes into a new batch); ``error``: why.
    """

    state: str
    ended: bool
    failed: bool = False
    counts: Mapping[str, int] = field(default_factory=dict)
    error: CallError | None = None
    #: provider-side handles the results are read from (OpenAI's output and error files)
    files: Mapping[str, str | None] = field(default_factory=dict)


class BatchAdapter:
    """Base of every provider's batch jobs. Adapters raise ``CallError`` subclasses only."""

    #: the provider's caps on one batch: requests and bytes of its input
    max_requests = 50_000
    max_bytes = 200 * 2**20
    name = "batch"

    def size(self, item: BatchItem) -> int:
        """Bytes ``item`` adds to a chunk's input (its JSONL line)."""
        return len(json.dumps(self.line(item)).encode()) + 1

    def line(self, item: BatchItem) -> dict[str, Any]:
        """The item as the provider's batch input wants it."""
        raise NotImplementedError

    async def check(self) -> None:
        """Raise ``ConfigError`` when the endpoint has no batch API (before anything is sent)."""

    def expect(self, custom_id: str, request: CompletionRequest) -> None:
        """Told of every request whose result will be read, whichever way it goes: into a new
        chunk, or waited on in a batch an earlier process submitted (resume), so reading its
        result never depends on this process having built its line."""

    async def upload(self, chunk: list[BatchItem]) -> str | None:
        """Upload the chunk's input when the API takes a file (OpenAI); return its file id."""
        return None

    async def create(self, chunk: list[BatchItem], file_id: str | None, *, chunk_id: str) -> str:
        """Create the batch job; return its id."""
        raise NotImplementedError

    async def find(self, chunk_id: str, *, since: float) -> str | None:
        """The id of a batch created for ``chunk_id`` no earlier than ``since`` (Unix seconds),
        if the provider can tell; None when it cannot or there is none.

        A run killed after the provider created a chunk's batch but before the store recorded
        its id asks this on resume, so the chunk is polled again instead of paid for twice."""
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        raise NotImplementedError

    def results(self, batch_id: str, status: BatchStatus) -> AsyncIterator[tuple[str, Outcome]]:
        """(custom_id, outcome) for every request the ended batch has an answer for."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the adapter holds (the provider closes its own client)."""
