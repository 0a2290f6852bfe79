"""Batch mode: a stage's calls go through the provider's batch API instead of one call each.

The runner, the stage logic, the store and the report stay as they are; only *how a call is
made* changes. A stage in batch mode hands its request to the :class:`Batcher`, which

1. collects requests per model into chunks (``window`` seconds after a chunk's first request,
   cut at the provider's caps: OpenAI 50,000 requests / 200 MB, Anthropic 100,000 / 256 MB);
2. records the chunk and its membership in the run store, uploads it, records the file id,
   creates the batch, records its id (each before the next step: see
   :mod:`chainfleet.store.batch_ledger`);
3. polls it with growing waits (``poll`` x 1.5 up to ``poll_max``), then downloads the results,
   keeps every one in the store, and resolves each waiting call by ``custom_id``.

An agent stage (``tools:``) in batch mode sends each model turn this way, so its items go in
rounds: a round's chunk carries every turn that is due, and when it comes back each item runs
its tools and queues its next turn for the next chunk (see :mod:`chainfleet.chain.agent`). A
result's tool calls are kept in the store with its text.

So a chain is a pipeline of batches: an item's stage 2 is queued the moment its stage 1 result
is in, and goes out with the next chunk. Many chains wait at once (``batch.concurrency``, 10,000
by default) on futures, which cost little; admission stays lazy.

A request that errored or expired inside a batch comes back to the stage as a retryable error,
so the stage's retry loop sends it, and only it, in a later chunk, and it counts toward
``--max-attempts``; the finished results of an expired batch are kept. A fatal error (a bad
key, no quota, an unknown model) stops every further submission. On resume, a request found in
a submitted chunk waits on that batch (it is polled again), and a request that already
succeeded in a batch is answered from the store: no chunk is submitted twice.

Example::

    chainfleet run pipeline.yaml -i topics.txt --batch --model openai:gpt-4o-mini
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chainfleet.clock import Clock
from chainfleet.errors import CallError, ConfigError, FatalError, RetryableError, ServerError
from chainfleet.pipeline import BatchSettings, Pipeline
from chainfleet.providers import Completion, CompletionRequest, Provider, ProviderPool, ToolCall
from chainfleet.providers.batch import (
    BatchAdapter,
    BatchExpired,
    BatchItem,
    BatchStatus,
    Outcome,
    batch_adapter_for,
)
from chainfleet.store.atomic import kill_point
from chainfleet.store.batch_ledger import PREPARING, SUBMITTED, UPLOADED, BatchLedger, RequestResult
from chainfleet.store.runstore import RunStore

__all__ = ["BatchCalls", "BatchCounts", "Batcher", "batcher_for", "with_batch"]

Caller = Callable[[CompletionRequest], Awaitable[Completion]]
#: a stage's batch calls: the caller for a request key
BatchCalls = Callable[[tuple[Any, ...]], Caller]


@dataclass
class BatchCounts:
    """Live counts for progress: chunks by state and requests by state."""

    submitted: int = 0
    in_progress: int = 0
    ended: int = 0
    failed: int = 0
    queued: int = 0
    in_batches: int = 0
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    resumed: int = 0
    #: chunks a stopped run recorded but never saw created, found made at the provider
    adopted: int = 0


@dataclass
class _Chunk:
    """A chunk in flight: its adapter, and the calls waiting on it by custom_id."""

    chunk_id: str
    spec: str
    adapter: BatchAdapter
    waiters: dict[str, asyncio.Future[Outcome]] = field(default_factory=dict)


@dataclass
class _Lane:
    """Requests for one model waiting to go into its next chunk."""

    spec: str
    adapter: BatchAdapter
    items: list[tuple[BatchItem, asyncio.Future[Outcome]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


def custom_id_for(item_id: str, key_parts: tuple[Any, ...]) -> str:
    """A request's id in a batch: stable across runs (for resume), unique per (item, stage
    input), and within both providers' rules (``[A-Za-z0-9_-]{1,64}``)."""
    data = json.dumps([item_id, *key_parts], sort_keys=True, default=str, ensure_ascii=False)
    return "cf-" + hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _copy(error: CallError) -> CallError:
    """A fresh error like ``error``: each item gets its own (the runner writes item and stage
    on it), and the message names the batch, never a key."""
    return type(error)(str(error), status=error.status)


class Batcher:
    """Collects, submits and watches one run's batch jobs. See the module docstring."""

    def __init__(self, store: RunStore, run_id: str, settings: BatchSettings, clock: Clock) -> None:
        self.ledger = BatchLedger(store, run_id)
        self.settings = settings
        self.clock = clock
        self.counts = BatchCounts()
        self.fatal: CallError | None = None
        self._adapters: dict[str, BatchAdapter] = {}
        self._lanes: dict[str, _Lane] = {}
        self._chunks: dict[str, _Chunk] = {}
        #: chunks this run recorded (their own submission decides), and adoption lookups
        self._mine: set[str] = set()
        self._adopting: dict[str, asyncio.Future[str | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- set-up --------------------------------------------------------------------------------

    def adapter(self, spec: str, provider: Provider) -> BatchAdapter:
        if spec not in self._adapters:
            self._adapters[spec] = batch_adapter_for(provider, sim_delay=self.settings.sim_delay)
        return self._adapters[spec]

    async def check(self, pipeline: Pipeline, pool: ProviderPool) -> None:
        """Every batched model's endpoint has a batch API: a ``ConfigError`` (exit 2) before
        any request is sent, naming the stage."""
        checked: set[str] = set()
        for stage in pipeline.stages:
            if not pipeline.batched(stage):
                continue
            spec = pipeline.model_for(stage)
            if spec in checked:
                continue
            checked.add(spec)
            provider, _ = pool.for_model(spec)
            where = f"{pipeline.source or 'pipeline'}: stage {stage.name!r} (mode: batch, model {spec})"
            try:
                await self.adapter(spec, provider).check()
            except ConfigError as exc:
                raise ConfigError(exc.reason, where=where) from None

    def calls(self, provider: Provider, item_id: str) -> BatchCalls:
        """For one item's stage: the call (by request key) a batched stage makes instead of
        ``provider.complete``. Its repairs get theirs from the same function."""

        def caller(key_parts: tuple[Any, ...]) -> Caller:
            custom_id = custom_id_for(item_id, key_parts)
            spec = str(key_parts[1])

            async def call(request: CompletionRequest) -> Completion:
                return await self.complete(spec, provider, custom_id, request)

            return call

        return caller

    # -- one request ---------------------------------------------------------------------------

    async def complete(
        self, spec: str, provider: Provider, custom_id: str, request: CompletionRequest
    ) -> Completion:
        """The completion of ``request`` through a batch: from the store when a batch already
        answered it, from the batch it is in (resume), else from the next chunk."""
        if self.fatal is not None:
            raise _copy(self.fatal)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        entry = self.ledger.latest(custom_id)
        if entry is not None and entry.state == "succeeded" and entry.output is not None:
            self.counts.resumed += 1
            return Completion(
                text=entry.output,
                input_tokens=entry.input_tokens,
                output_tokens=entry.output_tokens,
                tool_calls=_tool_calls(entry.tool_calls),
            )
        adapter = self.adapter(spec, provider)
        adapter.expect(custom_id, request)
        batch_id: str | None = None
        if entry is not None and entry.state == "submitted" and entry.chunk_state == SUBMITTED:
            batch_id = entry.batch_id
        elif entry is not None and entry.state == "pending" and entry.chunk_state in (PREPARING, UPLOADED):
            batch_id = await self._adopt(entry.chunk_id, adapter)  # a kill before its id was kept?
        if entry is not None and batch_id:
            self.counts.resumed += 1
            self._wait_on(entry.chunk_id, batch_id, spec, adapter, custom_id, future)
        else:
            self._queue(spec, adapter, BatchItem(custom_id, request), future)
        outcome = await future
        if isinstance(outcome, CallError):
            raise outcome
        return outcome

    async def _adopt(self, chunk_id: str, adapter: BatchAdapter) -> str | None:
        """A chunk a stopped run recorded but never saw created: ask the provider once whether
        its batch exists (the run may have died between the provider's answer and the store's
        commit). Found: it is recorded as submitted and polled; not: it is marked not sent."""
        task = self._adopting.get(chunk_id)
        if task is None:
            task = self._adopting[chunk_id] = asyncio.ensure_future(self._find(chunk_id, adapter))
        return await asyncio.shield(task)

    async def _find(self, chunk_id: str, adapter: BatchAdapter) -> str | None:
        if chunk_id in self._mine:  # recorded by this run: its own submission decides
            return None
        since = float(self.ledger.chunk(chunk_id).get("created") or 0.0)
        try:
            batch_id = await adapter.find(chunk_id, since=since)
        except CallError:
            batch_id = None  # cannot tell: sending again is the safe side (nothing is lost)
        if batch_id is None:
            self.ledger.not_sent(chunk_id, "the run stopped before its batch was created")
        else:
            self.ledger.submitted(chunk_id, batch_id)
            self.counts.adopted += 1
        return batch_id

    def _queue(
        self, spec: str, adapter: BatchAdapter, item: BatchItem, future: asyncio.Future[Outcome]
    ) -> None:
        lane = self._lanes.get(spec)
        if lane is None:
            lane = self._lanes[spec] = _Lane(spec, adapter)
        lane.items.append((item, future))
        self.counts.queued += 1
        if lane.task is None or lane.task.done():
            lane.task = self._spawn(self._collect(lane))

    def _wait_on(
        self,
        chunk_id: str,
        batch_id: str,
        spec: str,
        adapter: BatchAdapter,
        custom_id: str,
        future: asyncio.Future[Outcome],
    ) -> None:
        """Wait on a batch submitted earlier (by a run that was stopped): poll it again."""
        live = self._chunks.get(chunk_id)
        if live is None:
            live = self._chunks[chunk_id] = _Chunk(chunk_id, spec, adapter)
            self.counts.in_progress += 1
            self._spawn(self._watch(live, batch_id))
        live.waiters[custom_id] = future
        self.counts.in_batches += 1

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- chunks --------------------------------------------------------------------------------

    async def _collect(self, lane: _Lane) -> None:
        """Let a chunk form for ``window`` seconds, then send what came, cut at the caps."""
        while lane.items:
            await self.clock.sleep(self.settings.window)
            while lane.items:
                chunk, size = self._take(lane)
                try:
                    await self._submit(lane, chunk, size)
                except Exception as exc:  # a bug or a broken store must not leave calls waiting forever
                    waiters = {item.custom_id: future for item, future in chunk}
                    self._resolve(waiters, {}, ServerError(f"batch submission failed: {exc!r}"))
                    raise

    def _take(self, lane: _Lane) -> tuple[list[tuple[BatchItem, asyncio.Future[Outcome]]], int]:
        """The next chunk of the lane, cut at the provider's caps, and its size in bytes."""
        adapter = lane.adapter
        cap = min(adapter.max_requests, self.settings.max_requests or adapter.max_requests)
        size = 0
        count = 0
        for item, _ in lane.items:
            line = adapter.size(item)
            if count and (count >= cap or size + line > adapter.max_bytes):
                break
            size += line
            count += 1
        chunk, lane.items = lane.items[:count], lane.items[count:]
        self.counts.queued -= len(chunk)
        return chunk, size

    async def _submit(
        self, lane: _Lane, chunk: list[tuple[BatchItem, asyncio.Future[Outcome]]], size: int
    ) -> None:
        """Record, upload, create: each step in the store before the next one."""
        items = [item for item, _ in chunk]
        if self.fatal is not None:
            self._resolve({item.custom_id: fut for item, fut in chunk}, {}, self.fatal)
            return
        chunk_id = self.ledger.new_chunk(lane.spec, [item.custom_id for item in items], size)
        self._mine.add(chunk_id)
        live = _Chunk(chunk_id, lane.spec, lane.adapter, {item.custom_id: fut for item, fut in chunk})
        try:
            file_id = await lane.adapter.upload(items)
            if file_id is not None:
                self.ledger.uploaded(chunk_id, file_id)
            batch_id = await lane.adapter.create(items, file_id, chunk_id=chunk_id)
            kill_point("batch-created")  # tests: the provider has the batch, the store not yet
        except CallError as exc:
            self.ledger.not_sent(chunk_id, str(exc))
            if isinstance(exc, FatalError):
                self.fatal = self.fatal or exc
            self.counts.failed += 1
            self._resolve(live.waiters, {}, exc)
            return
        self.ledger.submitted(chunk_id, batch_id)
        self.counts.submitted += 1
        self.counts.in_progress += 1
        self.counts.in_batches += len(items)
        self._chunks[chunk_id] = live
        self._spawn(self._watch(live, batch_id))

    async def _watch(self, live: _Chunk, batch_id: str) -> None:
        """Poll until the batch ends, keep its results, resolve the calls waiting on it."""
        try:
            await self._watched(live, batch_id)
        except Exception as exc:  # as in _collect: no call is left waiting
            self._chunks.pop(live.chunk_id, None)
            self._resolve(live.waiters, {}, ServerError(f"watching batch {batch_id} failed: {exc!r}"))
            raise

    async def _watched(self, live: _Chunk, batch_id: str) -> None:
        status = await self._until_ended(live, batch_id)
        results: dict[str, Outcome] = {}
        if status.ended and not status.failed:
            try:
                results = await self._download(live, batch_id, status)
            except CallError as exc:  # a revoked key, a deleted file: the results are out of reach
                status = BatchStatus(state=status.state, ended=True, failed=True, error=exc)
        stored = {cid: _stored(outcome) for cid, outcome in results.items()}
        error = status.error or BatchExpired(f"batch {batch_id} ended ({status.state}) without this request")
        self.ledger.ended(live.chunk_id, stored, failed=status.failed, error=str(error))
        self._chunks.pop(live.chunk_id, None)
        self.counts.in_progress -= 1
        if status.failed:
            self.counts.failed += 1
        else:
            self.counts.ended += 1
        if isinstance(status.error, FatalError):
            self.fatal = self.fatal or status.error
        self._resolve(live.waiters, results, error)

    async def _until_ended(self, live: _Chunk, batch_id: str) -> BatchStatus:
        wait = self.settings.poll
        while True:
            await self.clock.sleep(wait)
            wait = min(wait * 1.5, self.settings.poll_max)
            try:
                status = await live.adapter.poll(batch_id)
            except RetryableError:
                continue  # the status check failed, not the batch: look again later
            except CallError as exc:
                return BatchStatus(state="unreadable", ended=True, failed=True, error=exc)
            self.ledger.polled(live.chunk_id, status.state, status.counts)
            kill_point("batch-polled")  # tests: killed while the batch is being polled
            if status.ended:
                return status

    async def _download(self, live: _Chunk, batch_id: str, status: BatchStatus) -> dict[str, Outcome]:
        wait = self.settings.poll
        for _ in range(5):
            try:
                return {cid: outcome async for cid, outcome in live.adapter.results(batch_id, status)}
            except RetryableError:
                await self.clock.sleep(wait)
                wait = min(wait * 2, self.settings.poll_max)
        return {}  # unreadable: its requests go into a new batch

    def _resolve(
        self, waiters: dict[str, asyncio.Future[Outcome]], results: dict[str, Outcome], missing: CallError
    ) -> None:
        for custom_id, future in waiters.items():
            outcome = results.get(custom_id)
            if outcome is None:
                outcome = _copy(missing)
                self.counts.expired += 1
            elif isinstance(outcome, CallError):
                self.counts.errored += 1
                if isinstance(outcome, RetryableError) and outcome.retry_after is None:
                    outcome.retry_after = 0.0  # the next chunk's window and turnaround are the backoff
                if isinstance(outcome, FatalError):
                    self.fatal = self.fatal or outcome
            else:
                self.counts.succeeded += 1
            self.counts.in_batches = max(0, self.counts.in_batches - 1)
            if not future.done():
                future.set_result(outcome)

    async def aclose(self) -> None:
        """Stop polling (the batches go on at the provider; a resume picks them up)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for adapter in self._adapters.values():
            await adapter.aclose()


def _stored(outcome: Outcome) -> RequestResult:
    if isinstance(outcome, CallError):
        state = "expired" if isinstance(outcome, BatchExpired) else "errored"
        return RequestResult(state=state, error=f"{outcome.kind}: {outcome}")
    calls = [call.to_dict() for call in outcome.tool_calls]
    return RequestResult(
        state="succeeded",
        output=outcome.text,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        tool_calls=json.dumps(calls, ensure_ascii=False) if calls else None,
    )


def _tool_calls(stored: str | None) -> tuple[ToolCall, ...]:
    """An agent turn's tool calls as :func:`_stored` kept them."""
    if not stored:
        return ()
    return tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in json.loads(stored))


def with_batch(pipeline: Pipeline) -> Pipeline:
    """A copy of ``pipeline`` with every LLM stage in batch mode (the ``--batch`` flag)."""
    stages = [s.model_copy(update={"mode": None}) for s in pipeline.stages]
    copy = pipeline.model_copy(update={"mode": "batch", "stages": stages})
    return copy


def batcher_for(pipeline: Pipeline, store: RunStore, run_id: str, clock: Clock) -> Batcher | None:
    """A batcher for the run when any stage is in batch mode (None: every call is online)."""
    if any(pipeline.batched(stage) for stage in pipeline.stages):
        return Batcher(store, run_id, pipeline.batch, clock)
    return None
