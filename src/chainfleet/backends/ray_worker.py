"""A Ray worker: an async actor that runs chains with the same stage code as a local run.

Each worker holds a :class:`~chainfleet.chain.context.RunContext` of its own (never a runner)
whose store is a thin client (:class:`RemoteStore`): a stage result, an attempt, a cache write
becomes a numbered event for the driver; ``durable()`` waits until the driver says it has
committed that event; a look-up (a result to reuse on resume, a cached response) is a question
answered by the driver's store (:class:`RemoteReads`).
An agent's turns and tool results are events too (``target="turns"``), and its stored turns
questions; its Python tools are imported here (on the driver's ``sys.path``), and its MCP servers
are started once per worker, before the first chain, and closed with it (:meth:`ChainWorker.close`).
Limits go through :class:`~chainfleet.backends.ray_limits.LeasedLimiter` (the model's limiter
actor). Everything reaches the driver through :meth:`ChainWorker.exchange`, which the driver calls
in a loop: the worker never calls the driver.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from chainfleet.backends.ray_code import CodeLimiter, RemoteJournal, unship
from chainfleet.backends.ray_limits import LeasedLimiter
from chainfleet.backends.ray_wire import ChainTask, Finished, Inbound, Outbound, StatsDelta, StoreCall
from chainfleet.chain.context import Limiters, RunContext
from chainfleet.chain.progress import Chain
from chainfleet.chain.review import ReviewHook
from chainfleet.chain.stage import StageExecutor
from chainfleet.code.work import CodeWork
from chainfleet.config import RunSettings
from chainfleet.errors import CallError, PermanentError
from chainfleet.inputs import Item
from chainfleet.limits.retry import RetryPolicy
from chainfleet.pipeline import Pipeline
from chainfleet.store.agent_turns import TurnRow
from chainfleet.store.review_queue import Entry
from chainfleet.store.runstore import CallRow, RevisionRow, RunStore, StageHit
from chainfleet.store.stats import COUNTERS, RunStats
from chainfleet.trace.notes import ItemTrace, NotingTracer

if TYPE_CHECKING:
    from chainfleet.limits.limiter import ModelLimiter
    from chainfleet.providers import Provider

__all__ = ["ChainWorker", "RemoteStore", "Secrets", "WorkerSpec"]


class Secrets:
    """Environment variables for the workers (API keys, base URLs); the repr shows names only."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = dict(values)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self.values)})"


@dataclass
class WorkerSpec:
    """Everything a worker needs to run chains of one run."""

    #: the pipeline as data (compiled templates do not pickle): ``Pipeline.model_dump()``
    pipeline: dict[str, Any]
    settings: RunSettings
    run_id: str
    retry: RetryPolicy
    reuse: bool
    cache: bool
    persistent: bool
    #: model spec -> the handle of its limiter actor (models without a limiter are absent)
    limiters: dict[str, Any]
    env: Secrets
    providers: dict[str, Provider] = field(default_factory=dict)
    #: whether chains consult the driver's review queue (its hook's ``enabled``)
    review: bool = False
    #: the driver's ``sys.path`` folders: where an agent's tool modules are imported from (the
    #: same paths on a local node; on a cluster, the code must be where the driver had it)
    code_path: list[str] = field(default_factory=list)
    #: a code pipeline's function, pickled by value (:func:`~chainfleet.backends.ray_code.ship`)
    work: bytes | None = None
    #: the driver's run is traced (``--otel``): chains note what they do and send it back with
    #: their result; ``trace_content``: with the prompts and replies (``--otel-content``)
    trace: bool = False
    trace_content: bool = False


class _Outbox:
    """What the worker has for the driver, and the waits for the driver's answers."""

    def __init__(self) -> None:
        self.events: list[tuple[int, StoreCall]] = []
        self.lookups: list[tuple[int, StoreCall]] = []
        self.finished: list[Finished] = []
        self.number = 0
        self.committed = 0
        self._durable: list[tuple[int, asyncio.Future[None]]] = []
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self.ready = asyncio.Event()

    def add(self, event: StoreCall) -> None:
        self.number += 1
        self.events.append((self.number, event))
        self.ready.set()

    async def committed_through(self, number: int) -> None:
        if self.committed >= number:
            return
        future = asyncio.get_running_loop().create_future()
        self._durable.append((number, future))
        self.ready.set()
        await future

    async def ask(self, lookup: StoreCall) -> Any:
        self.number += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[self.number] = future
        self.lookups.append((self.number, lookup))
        self.ready.set()
        return await future

    def apply(self, out: Outbound) -> None:
        self.committed = max(self.committed, out.committed)
        waiting = []
        for number, future in self._durable:
            if number <= self.committed:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((number, future))
        self._durable = waiting
        for number, hit in out.answers.items():
            answer = self._answers.pop(number, None)
            if answer is not None and not answer.done():
                answer.set_result(hit)

    def drain(self, stats: StatsDelta) -> Inbound:
        inbound = Inbound(events=self.events, lookups=self.lookups, finished=self.finished, stats=stats)
        self.events, self.lookups, self.finished = [], [], []
        self.ready.clear()
        return inbound

    @property
    def pending(self) -> bool:
        return bool(self.events or self.lookups or self.finished)


class RemoteStore:
    """The worker's run store (or response cache): every write becomes an event for the
    driver, ``durable()`` waits for the driver's commit, reads go through :class:`RemoteReads`."""

    def __init__(self, outbox: _Outbox, *, persistent: bool, target: str = "store") -> None:
        self.outbox = outbox
        self.persistent = persistent
        self.target = target
        self.journal = RemoteJournal(outbox.add)

    def _write(self, method: str, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("durable", None)  # the driver commits every exchange before acknowledging
        self.outbox.add(StoreCall(method, args, kwargs, self.target))

    def save_stage(self, *args: Any, **kwargs: Any) -> None:
        self._write("save_stage", *args, **kwargs)

    def save_call(self, run_id: str, row: CallRow) -> None:
        self._write("save_call", run_id, row)

    def save_revision(self, run_id: str, row: RevisionRow) -> None:
        self._write("save_revision", run_id, row)

    def set_gates(self, *args: Any, **kwargs: Any) -> None:
        self._write("set_gates", *args, **kwargs)

    def cache_put(self, key: str, hit: StageHit) -> None:
        self._write("cache_put", key, hit)

    async def durable(self) -> None:
        """Return once the driver has committed everything this worker sent so far."""
        await self.outbox.committed_through(self.outbox.number)

    def flush(self) -> None:
        return None


class RemoteReads:
    """The look-ups of a stage on a worker: questions answered by the driver's store."""

    def __init__(self, outbox: _Outbox) -> None:
        self.outbox = outbox

    async def stage(self, item_id: str, stage: str, key: str) -> StageHit | None:
        hit: StageHit | None = await self.outbox.ask(StoreCall("find_stage", (item_id, stage, key)))
        return hit

    async def revision(self, item_id: str, stage: str, key: str, run_id: str | None) -> RevisionRow | None:
        call = StoreCall("find_revision", (item_id, stage, key), {"run_id": run_id})
        row: RevisionRow | None = await self.outbox.ask(call)
        return row

    async def cached(self, key: str) -> StageHit | None:
        hit: StageHit | None = await self.outbox.ask(StoreCall("cache_get", (key,), target="cache"))
        return hit

    async def turns(self, item_id: str, stage: str, key: str, run_id: str | None) -> list[TurnRow]:
        rows: list[TurnRow] = await self.outbox.ask(
            StoreCall("load", (item_id, stage, key, run_id), target="turns")
        )
        return rows


class RemoteTurns:
    """An agent's steps on a worker: each one an event for the driver's ``agent_turns`` table
    (the agent awaits ``store.durable()`` before acting on it, as locally)."""

    def __init__(self, outbox: _Outbox) -> None:
        self.outbox = outbox

    def save(self, run_id: str, row: TurnRow) -> None:
        self.outbox.add(StoreCall("save", (run_id, row), target="turns"))


class LeasedLimits(Limiters):
    """A worker's limiters: each metered model's lease on the cluster's limiter actor (a model
    without one is unmetered here too)."""

    def __init__(self, ctx: RunContext, leased: dict[str, LeasedLimiter], outbox: _Outbox) -> None:
        told = ctx.limits
        super().__init__(ctx.pipeline, rpm=told.rpm, tpm=told.tpm, clock=ctx.clock, rng=ctx.rng)
        self.by_model.update(leased)
        self.outbox = outbox

    def of(self, spec: str) -> ModelLimiter | None:
        if spec in self.by_model or self.pipeline.work is None:
            return self.by_model.get(spec)
        # a code chain's model, known only now: the driver's actor for it, asked on first lease
        metered = self.told(spec)[2]
        limiter = CodeLimiter(spec, self._actor, clock=self.clock) if metered else None
        self.by_model[spec] = limiter
        return limiter

    async def _actor(self, spec: str) -> Any:
        return await self.outbox.ask(StoreCall("of", (spec,), target="limits"))


class RemoteReviewHook(ReviewHook):
    """Review on a worker: the queue lives in the driver's run.db, so its reads are questions
    for the driver and its writes are events (committed before the chain's result counts)."""

    def __init__(
        self, pipeline: Pipeline, store: RunStore, run_id: str, outbox: _Outbox, *, enabled: bool
    ) -> None:
        super().__init__(pipeline, store, run_id)
        self.outbox = outbox
        self.enabled = enabled  # the driver's hook decides, from its queue

    async def _feedback(self, item_id: str, stage: str) -> tuple[int, str, str] | None:
        found: tuple[int, str, str] | None = await self.outbox.ask(
            StoreCall("feedback", (item_id, stage), target="review")
        )
        return found

    async def _taken(self, qid: int) -> None:
        self.outbox.add(StoreCall("mark_taken", (qid, self.run_id), target="review"))

    async def _match(self, item_id: str, stage: str, output: str) -> Entry | None:
        entry: Entry | None = await self.outbox.ask(
            StoreCall("match", (item_id, stage, output), target="review")
        )
        return entry

    async def _enqueue(self, **entry: Any) -> None:
        self.outbox.add(StoreCall("enqueue", (), entry, target="review"))


class ChainWorker:
    """The body of a worker actor (``ray.remote`` is applied by the driver)."""

    def __init__(self, spec: WorkerSpec, poll: float = 0.2) -> None:
        os.environ.update(spec.env.values)
        sys.path.extend(path for path in spec.code_path if path not in sys.path)
        self.poll = poll
        self.outbox = _Outbox()
        store = cast(RunStore, RemoteStore(self.outbox, persistent=spec.persistent))
        cache = None
        if spec.cache:
            cache = cast(RunStore, RemoteStore(self.outbox, persistent=True, target="cache"))
        pipeline = _pipeline(spec)
        review = RemoteReviewHook(pipeline, store, spec.run_id, self.outbox, enabled=spec.review)
        self.ctx = ctx = RunContext.local(
            pipeline,
            spec.settings,
            run_id=spec.run_id,
            store=store,
            cache=cache,
            providers=spec.providers,
            review=review,
        )
        ctx.retry, ctx.reuse = spec.retry, spec.reuse
        if spec.trace:  # notes only: the driver's tracer makes the spans (chainfleet.trace.notes)
            ctx.tracer = NotingTracer(ctx.clock, content=spec.trace_content)
        ctx.reads = RemoteReads(self.outbox)
        ctx.turn_writer = RemoteTurns(self.outbox)  # an agent's turns, journaled through the driver
        leased = spec.limiters.items()
        self.limiters = {model: LeasedLimiter(actor, clock=ctx.clock) for model, actor in leased}
        ctx.limits = LeasedLimits(ctx, self.limiters, self.outbox)
        self.store = cast(RemoteStore, store)
        self.executor: StageExecutor | CodeWork = (
            CodeWork(ctx) if pipeline.work is not None else StageExecutor(ctx)
        )
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._started = False
        #: this worker's MCP servers (see _mcp_started): their task, and the word to close them
        self._mcp: asyncio.Future[None] | None = None
        self._mcp_ready: asyncio.Future[None] | None = None
        self._mcp_stop = asyncio.Event()
        self._sent = RunStats()
        self._sent_cost: float | None = 0.0
        self._sent_seconds: dict[str, int] = {}
        self._sent_routes: dict[str, tuple[list[dict[str, int]], dict[tuple[str, str, str, str], int]]] = {}

    def pid(self) -> int:
        return os.getpid()

    async def submit(self, tasks: list[ChainTask], elapsed: float | None = None) -> None:
        """Start running ``tasks`` (each returns through :meth:`exchange` when finished).
        ``elapsed``: the seconds since the run's start on the driver's clock as it sent them,
        which puts this worker's clock readings (call times, trace notes) on the run's scale.
        (Taken from the first submit, not the first exchange: the driver's pumps exchange
        before the run's session has begun and its start is known.)"""
        if elapsed is not None and not self._started:
            self.ctx.t0 = self.ctx.clock.now() - elapsed
            self._started = True
        await self._mcp_started()
        for task in tasks:
            chain = Chain(Item(id=task.id, index=task.index, line=task.line, fields=task.fields))
            chain.outputs = dict(task.outputs)
            chain.next_stage = task.next_stage
            if self.ctx.tracer.on:
                self.ctx.tracer.item_started(chain)
            if isinstance(self.executor, CodeWork):
                self.store.journal.load(task.index, task.journal)
            self.tasks[task.index] = asyncio.ensure_future(self._run(chain))

    async def cancel(self, indexes: list[int]) -> None:
        for index in indexes:
            task = self.tasks.pop(index, None)
            if task is not None:
                task.cancel()

    async def _run(self, chain: Chain) -> None:
        try:
            await self.executor.advance(chain)
            error = chain.error
        except Exception as exc:  # a bug of ours: this item fails, the worker goes on
            error = PermanentError(f"{type(exc).__name__}: {exc}")
        self.tasks.pop(chain.item.index, None)
        self.store.journal.forget(chain.item.index)
        self.outbox.finished.append(
            Finished(
                chain.item.index,
                _sendable(error),
                chain.error_stage,
                parked=chain.parked,
                seconds=chain.seconds,
                trace=chain.trace,
            )
        )
        self.outbox.ready.set()

    async def exchange(self, out: Outbound) -> Inbound:
        """Take the driver's word (committed events, answers, stopping); return what is new,
        waiting up to ``poll`` seconds for something to happen."""
        self.outbox.apply(out)
        if out.halted:
            self.ctx.state.stop("stopping")
        if not self.outbox.pending:
            try:
                await asyncio.wait_for(self.outbox.ready.wait(), timeout=self.poll)
            except asyncio.TimeoutError:
                pass
        await asyncio.sleep(0)  # let the chains just woken add theirs: one larger batch
        for finished in self.outbox.finished:  # their notes' readings as seconds into the run
            if isinstance(finished.trace, ItemTrace):
                finished.trace.stage = None
                finished.trace = finished.trace.shift(-self.ctx.t0)
        return self.outbox.drain(self._delta())

    def _delta(self) -> StatsDelta:
        stats, sent = self.ctx.stats, self._sent
        counts = {}
        for name in COUNTERS:  # repairs, revisions and judge calls too
            value, before = getattr(stats, name), getattr(sent, name)
            if value != before:
                counts[name] = value - before
                setattr(sent, name, value)
        cost = self.ctx.spend.cost_usd
        cost_delta = None if cost is None or self._sent_cost is None else cost - self._sent_cost
        self._sent_cost = cost
        stages = {}
        for name, stage in stats.stages.items():
            old = sent.stage(name)
            start = self._sent_seconds.get(name, 0)
            new_seconds = list(stage.seconds[start:])
            stages[name] = (stage.calls - old.calls, stage.failed - old.failed, new_seconds, stage.in_flight)
            old.calls, old.failed = stage.calls, stage.failed
            self._sent_seconds[name] = len(stage.seconds)
        passthrough, self.ctx.passthrough = self.ctx.passthrough, {}
        routes = self._route_delta()
        return StatsDelta(counts, cost_delta, stages, passthrough, routes)

    def _route_delta(self) -> dict[str, tuple[list[dict[str, int]], dict[tuple[str, str, str, str], int]]]:
        """Each route's per-target counts and moves since the last exchange (the driver adds
        them into its own route, whose stats the report reads)."""
        found = {}
        for name, route in self.ctx.routes.items():
            sent_counts, sent_moves = self._sent_routes.setdefault(name, ([{} for _ in route.targets], {}))
            counts = []
            for target, before in zip(route.targets, sent_counts, strict=True):
                new = {k: v - before.get(k, 0) for k, v in target.counts.items()}
                counts.append({k: v for k, v in new.items() if v})
                before.update(target.counts)
            moves = {m: n - sent_moves.get(m, 0) for m, n in route.moves.items() if n != sent_moves.get(m, 0)}
            sent_moves.update(route.moves)
            if any(counts) or moves:
                found[name] = (counts, moves)
        return found

    async def leases(self) -> int:
        """How many leases this worker took from the limiter actors (for the benchmark)."""
        return sum(limiter.leases for limiter in self.limiters.values())

    async def _mcp_started(self) -> None:
        """This worker's MCP servers, started once before its first chain (the pipeline's
        ``mcp:`` tools; the driver listed and checked them at load). They live in a task of
        their own, which the SDK wants to close them in too (:meth:`close` tells it to)."""
        if self._mcp is None:
            if not any(t.mcp for s in self.ctx.pipeline.stages for t in s.tools or ()):
                return
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._mcp = asyncio.ensure_future(self._serve_mcp(ready))
            self._mcp_ready = ready
        assert self._mcp_ready is not None
        await asyncio.shield(self._mcp_ready)

    async def _serve_mcp(self, ready: asyncio.Future[None]) -> None:
        from chainfleet.chain.mcp import start_servers

        try:
            servers = await start_servers(self.ctx.pipeline)
        except BaseException as exc:
            ready.set_exception(exc)
            raise
        try:
            self.ctx.agent_tools = servers.by_stage
            ready.set_result(None)
            await self._mcp_stop.wait()
        finally:
            await servers.aclose()

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if self._mcp is not None:  # the MCP servers go with the worker
            self._mcp_stop.set()
            await asyncio.gather(self._mcp, return_exceptions=True)
        if isinstance(self.executor, CodeWork):
            await self.executor.gateway.aclose()
        await self.ctx.pool.aclose()


def _pipeline(spec: WorkerSpec) -> Pipeline:
    """The run's pipeline; a code pipeline's function put back in its stage and its work."""
    if spec.work is None:
        return Pipeline.model_validate(spec.pipeline)
    fn = unship(spec.work)
    data = dict(spec.pipeline)
    data["stages"] = [{**stage, "tool": fn} for stage in data["stages"]]
    return Pipeline.model_validate({**data, "work": fn})


def _sendable(error: CallError | None) -> CallError | None:
    """The error itself when it pickles (it always should), else a plain copy of its message."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        copy = PermanentError(str(error), status=error.status, item_id=error.item_id, stage=error.stage)
        copy.kind = error.kind
        return copy
