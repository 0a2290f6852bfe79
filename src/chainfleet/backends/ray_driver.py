"""The Ray backend's driver side: workers, limiter actors, and the one writer of the store.

The runner admits chains as it always does (lazily, ``concurrency`` in flight, depth first);
:meth:`RayBackend.advance` hands each admitted chain to the least busy worker (chains admitted in
the same turn of the event loop travel together) and waits for it to finish there. One pump per
worker calls its ``exchange`` in a loop, writes the events it brings into the run store, commits,
and tells the worker what is committed (so its chains go on), answers its look-ups, and adds its
counters into the run's. The driver's copy of each chain follows the committed stage results.

A worker that dies (its process killed, its node lost) loses only what it had not sent: its
chains go to the other workers from their last committed stage, and a replacement worker is
started (at most ``workers`` replacements over a run). When no worker is left, the chains fail
with ``worker_lost`` and the run stops. The driver's own death is a kill -9 of a local run:
everything committed is in the store, and ``--resume`` goes on from it (on Ray or locally).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chainfleet.backends.ray_cluster import RayConnection, connect
from chainfleet.backends.ray_code import placeholder, ship
from chainfleet.backends.ray_limits import SharedLimits
from chainfleet.backends.ray_wire import (
    JOURNAL_WRITES,
    READS,
    REVIEW_READS,
    REVIEW_WRITES,
    TURN_READS,
    TURN_WRITES,
    WRITES,
    ChainTask,
    Inbound,
    Outbound,
    StoreCall,
)
from chainfleet.backends.ray_worker import ChainWorker, Secrets, WorkerSpec
from chainfleet.chain.progress import Chain
from chainfleet.errors import ConfigError, FatalError
from chainfleet.limits.limiter import ModelLimiter
from chainfleet.pipeline.gates import JudgeCheck
from chainfleet.store.agent_turns import AgentTurns
from chainfleet.store.runstore import CallRow, StageHit

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext

__all__ = ["RayBackend", "WorkerLost", "portable"]

#: what a worker may write and read on each target but the run store and the cache (theirs:
#: WRITES and READS)
_WRITES = {"review": REVIEW_WRITES, "turns": TURN_WRITES, "journal": JOURNAL_WRITES}
_READS = {"review": REVIEW_READS, "turns": TURN_READS}

#: the environment a worker needs to reach the providers, when set here
FORWARDED_ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")


def portable(pipeline: dict[str, Any]) -> dict[str, Any]:
    """The pipeline as data a worker can rebuild: an agent's ``function:`` tools as
    ``module:name`` (a worker imports them itself, on the driver's ``sys.path``), not as the
    function objects, whose unpickling would need the user's module before the worker could
    say where it lies."""
    for stage in pipeline.get("stages") or ():
        for tool in stage.get("tools") or ():
            function = tool.get("function")
            if function is not None and not isinstance(function, str):
                tool["function"] = f"{function.__module__}:{function.__qualname__}"
    return pipeline


class WorkerLost(FatalError):
    """Every Ray worker died and none could be started again."""

    kind = "worker_lost"


@dataclass
class _Link:
    """One worker as the driver sees it."""

    number: int
    actor: Any
    pid: int = 0
    #: chains sent there and not finished: index -> (driver's chain, its future)
    assigned: dict[int, tuple[Chain, asyncio.Future[None]]] = field(default_factory=dict)
    #: a code chain's seconds when it was sent (its run's whole time is added when it ends)
    seconds: dict[int, float] = field(default_factory=dict)
    to_send: list[ChainTask] = field(default_factory=list)
    committed: int = 0
    answers: dict[int, StageHit | None] = field(default_factory=dict)
    #: chains at each stage on this worker now
    in_flight: dict[str, int] = field(default_factory=dict)
    alive: bool = True
    pump: asyncio.Task[None] | None = None


class RayBackend:
    """Runs chains in ``workers`` async Ray actors on the cluster at ``address``.

    ``address``: ``auto``, ``HOST:PORT`` or ``ray://HOST:10001``; None: ``RAY_ADDRESS``, else a
    Ray node started here, on 127.0.0.1 only. ``workers``: None is one per CPU of the cluster,
    at most the run's ``concurrency``.
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigError("--workers must be at least 1", where="--workers")
        self.address = address
        self.workers = workers
        self.connection: RayConnection | None = None
        self.links: list[_Link] = []
        self.limiters: dict[str, Any] = {}
        self.replacements = 0
        #: per model: leases the workers took from its limiter actor over the run
        self.leases: dict[str, int] = {}
        self._ctx: RunContext | None = None
        self._spec: WorkerSpec | None = None
        self._worker_class: Any = None
        self._joined = asyncio.Event()
        self._limits_actor: Any = None
        self._closed = False
        self._sending = False

    # -- start and stop ---------------------------------------------------------------------------

    async def start(self, ctx: RunContext, concurrency: int) -> None:
        if ctx.adaptive is not None:
            raise ConfigError("--concurrency auto runs locally only; give a number", where="--backend ray")
        self._ctx = ctx
        self.connection = await asyncio.to_thread(connect, self.address)
        ray = self.connection.ray
        cpus = self.connection.cpus()
        count = self.workers or max(1, min(concurrency, int(cpus)))
        self.workers = count
        self._make_limiters(ctx, count)
        pipeline, work = ctx.pipeline.model_dump(), None
        if ctx.pipeline.work is not None:  # the user's own chain: shipped by value (ray_code)
            work = ship(ctx.pipeline.work)
            pipeline["stages"] = [{**stage, "tool": placeholder} for stage in pipeline["stages"]]
        self._spec = WorkerSpec(
            pipeline=portable(pipeline),
            code_path=[path for path in sys.path if path],
            work=work,
            settings=ctx.settings,
            run_id=ctx.run_id,
            retry=ctx.retry,
            reuse=ctx.reuse,
            cache=ctx.cache is not None,
            persistent=ctx.store.persistent,
            limiters=self.limiters,
            env=Secrets(self._env(ctx)),
            providers=ctx.provider_overrides,
            review=ctx.review.enabled,
            trace=ctx.tracer.on,
            trace_content=ctx.tracer.content,
        )
        options = {"num_cpus": min(1.0, cpus / count), "max_restarts": 0, "max_concurrency": 1000}
        self._worker_class = ray.remote(**options)(ChainWorker)
        await asyncio.gather(*(self._spawn() for _ in range(count)))

    def _make_limiters(self, ctx: RunContext, workers: int) -> None:
        ray = self.connection.ray if self.connection else None
        remote = ray.remote(num_cpus=0, max_concurrency=1000)(SharedLimits) if ray else None
        self._limits_actor = remote  # a code chain's models get theirs as they are called
        pipeline = ctx.pipeline
        specs = {pipeline.model_for(s) for s in pipeline.stages if not s.is_tool}
        judges = {c.model for s in pipeline.stages for c in s.checks if isinstance(c, JudgeCheck)}
        specs |= {spec for spec in judges if spec in pipeline.routes}  # a judge's route too
        for spec in sorted(specs):
            route = ctx.pipeline.routes.get(spec)
            if route is not None:  # one actor per target (model and key), as a local run's limiters
                for target in route.targets:
                    key, rpm, tpm, metered = ctx.limits.told_target(target)
                    if metered and remote is not None and key not in self.limiters:
                        self.limiters[key] = remote.remote(rpm=rpm, tpm=tpm, workers=workers, probe=True)
                continue
            rpm, tpm, metered = ctx.limits.told(spec)
            if metered and remote is not None:
                self.limiters[spec] = remote.remote(rpm=rpm, tpm=tpm, workers=workers)

    def _env(self, ctx: RunContext) -> dict[str, str]:
        names = set(FORWARDED_ENV)
        names.update(p.api_key_env for p in ctx.pipeline.providers.values() if p.api_key_env)
        for route in ctx.pipeline.routes.values():  # each target's own key
            names.update(t.api_key_env for t in route.targets if t.api_key_env)
        return {name: os.environ[name] for name in sorted(names) if name in os.environ}

    async def _spawn(self) -> _Link:
        """Start one worker and its pump; it takes chains once it answers."""
        actor = self._worker_class.remote(self._spec)
        link = _Link(number=len(self.links), actor=actor)
        link.pid = await actor.pid.remote()
        self.links.append(link)
        link.pump = asyncio.ensure_future(self._pump(link))
        self._joined.set()
        return link

    async def aclose(self) -> None:
        self._closed = True
        pumps = [link.pump for link in self.links if link.pump is not None]
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        if self.connection is None:
            return
        ray = self.connection.ray
        await self._report_limits()
        closing = [link.actor.close.remote() for link in self.links if link.alive]
        await asyncio.gather(*closing, return_exceptions=True)
        for actor in [link.actor for link in self.links] + list(self.limiters.values()):
            ray.kill(actor)
        self.links, self.limiters = [], {}
        await asyncio.to_thread(self.connection.close)
        self.connection = None

    async def settle(self, ctx: RunContext) -> None:
        await self._report_limits()

    async def _report_limits(self) -> None:
        """The limiter actors' state into the run's limiters, which the report reads."""
        if self._ctx is None:
            return
        for spec, actor in self.limiters.items():
            try:
                state = await actor.state.remote()
            except Exception:  # the actor is gone: the report says less about its limits
                continue
            limiter = ModelLimiter(rpm=state.told_rpm, tpm=state.told_tpm)
            limiter.limit_rpm, limiter.limit_tpm = state.limit_rpm, state.limit_tpm
            limiter.cooldowns = state.cooldowns
            self._ctx.limits.by_model[spec] = limiter
            self.leases[spec] = state.leases

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (tests kill one)."""
        return [link.pid for link in self.links if link.alive]

    # -- chains -----------------------------------------------------------------------------------

    async def advance(self, ctx: RunContext, chain: Chain) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._dispatch(chain, future)
        try:
            await future
        except asyncio.CancelledError:
            self._withdraw(chain)
            raise

    async def _dispatch(self, chain: Chain, future: asyncio.Future[None]) -> None:
        """Give the chain to the least busy live worker (waiting for a replacement if none)."""
        while True:
            alive = [link for link in self.links if link.alive]
            if alive:
                break
            if self.replacements >= (self.workers or 1) or self._closed:
                self._fail(chain, WorkerLost("every Ray worker died; no replacement could be started"))
                future.set_result(None)
                return
            self._joined.clear()
            await self._joined.wait()
        link = min(alive, key=lambda candidate: len(candidate.assigned))
        link.assigned[chain.item.index] = (chain, future)
        link.seconds[chain.item.index] = chain.seconds
        chain.next_stage = self._next_stage(chain)
        item = chain.item
        task = ChainTask(item.index, item.id, item.line, item.fields, dict(chain.outputs), chain.next_stage)
        if self._ctx is not None and self._ctx.pipeline.work is not None:  # its calls replay from these
            task.journal = self._ctx.store.journal.item_entries(self._ctx.run_id, item.index)
        link.to_send.append(task)
        if not self._sending:  # everything admitted this turn goes in one call per worker
            self._sending = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._sending = False
        ctx = self._ctx
        elapsed = None if ctx is None else ctx.clock.now() - ctx.t0  # (the run has begun: items go)
        for link in self.links:
            if link.alive and link.to_send:
                link.actor.submit.remote(link.to_send, elapsed)
                link.to_send = []

    def _withdraw(self, chain: Chain) -> None:
        for link in self.links:
            if link.assigned.pop(chain.item.index, None) is not None and link.alive:
                link.actor.cancel.remote([chain.item.index])

    def _next_stage(self, chain: Chain) -> int:
        stages = self._ctx.pipeline.stages if self._ctx else []
        done = 0
        while done < len(stages) and stages[done].name in chain.outputs:
            done += 1
        return done

    def _fail(self, chain: Chain, error: FatalError) -> None:
        ctx = self._ctx
        stages = ctx.pipeline.stages if ctx else []
        stage = stages[chain.next_stage].name if chain.next_stage < len(stages) else None
        error.item_id, error.stage = chain.item.id, stage
        chain.error, chain.error_stage = error, stage
        if ctx is not None:
            ctx.state.fail(error)

    # -- the pump: one per worker -----------------------------------------------------------------

    async def _pump(self, link: _Link) -> None:
        ray = self.connection.ray if self.connection else None
        lost = (ray.exceptions.RayActorError, ray.exceptions.RaySystemError) if ray else ()
        ctx = self._ctx
        assert ctx is not None
        while not self._closed:
            out = Outbound(
                committed=link.committed,
                answers=link.answers,
                halted=ctx.halted,
            )
            link.answers = {}
            try:
                inbound: Inbound = await link.actor.exchange.remote(out)
            except lost:
                await self._lost(link)
                return
            await self._commit(ctx, link, inbound)

    async def _commit(self, ctx: RunContext, link: _Link, inbound: Inbound) -> None:
        """Make a worker's store calls on the run store, commit, then settle its finished chains."""
        last = link.committed
        for number, call in inbound.events:
            last = max(last, number)
            self._follow(link, call)
            target = self._target(ctx, call)
            if target is not None and call.method in _WRITES.get(call.target, WRITES):
                getattr(target, call.method)(*call.args, **call.kwargs)
        for number, call in inbound.lookups:
            last = max(last, number)
            if call.target == "limits":  # a code chain's model: its one actor for the cluster
                link.answers[number] = self._limiter_of(ctx, str(call.args[0]))
                continue
            target = self._target(ctx, call)
            reads = _READS.get(call.target, READS)
            found = getattr(target, call.method)(*call.args, **call.kwargs) if call.method in reads else None
            link.answers[number] = None if target is None else found
        self._add_stats(ctx, link, inbound)
        await ctx.store.durable()
        link.committed = last
        for finished in inbound.finished:
            owner = link.assigned.pop(finished.index, None)
            if owner is None:
                continue
            chain, future = owner
            if finished.trace is not None and ctx.tracer.on:  # on this run's clock, then drawn
                ctx.tracer.absorb(chain, finished.trace.shift(ctx.t0))
            base = link.seconds.pop(finished.index, chain.seconds)
            if ctx.pipeline.work is not None:  # the item's whole time, as a local run keeps it
                chain.seconds = base + finished.seconds
            if finished.parked is not None:  # waits for a person: the stages up to it are done
                chain.parked = finished.parked
                chain.next_stage = self._next_stage(chain)
            elif finished.error is None:
                chain.next_stage = len(ctx.pipeline.stages)
            else:
                chain.error, chain.error_stage = finished.error, finished.error_stage
                chain.next_stage = self._next_stage(chain)
                if isinstance(finished.error, FatalError):
                    ctx.state.fail(finished.error)
            if not future.done():
                future.set_result(None)

    def _limiter_of(self, ctx: RunContext, spec: str) -> Any:
        """The limiter actor of model ``spec`` (made on first ask; None: unmetered)."""
        if spec not in self.limiters:
            rpm, tpm, metered = ctx.limits.told(spec)
            if not metered or self._limits_actor is None:
                return None
            self.limiters[spec] = self._limits_actor.remote(rpm=rpm, tpm=tpm, workers=self.workers or 1)
        return self.limiters[spec]

    @staticmethod
    def _target(ctx: RunContext, call: StoreCall) -> Any:
        """The run store, the response cache, the review queue or the journal (all in the
        driver)."""
        if call.target == "review":
            return ctx.review.queue
        if call.target == "turns":
            return AgentTurns(ctx.store)
        if call.target == "journal":
            return ctx.store.journal
        return ctx.cache if call.target == "cache" else ctx.store

    def _follow(self, link: _Link, call: StoreCall) -> None:
        """Keep the driver's copy of a chain up with what is committed (its outputs, attempts
        and call seconds), so a chain whose worker dies goes on from there."""
        if call.method == "save_stage":
            _, index, stage, output = call.args[:4]
            owner = link.assigned.get(index)
            if owner is not None:
                owner[0].outputs[stage] = json.loads(output) if call.kwargs.get("is_json") else output
        elif call.method == "save_call":
            row: CallRow = call.args[1]
            owner = link.assigned.get(row.index)
            if owner is not None:
                owner[0].attempts += 1
                owner[0].seconds += max(0.0, row.ended - row.started)

    def _add_stats(self, ctx: RunContext, link: _Link, inbound: Inbound) -> None:
        stats, delta, spend = ctx.stats, inbound.stats, ctx.spend
        for name, value in delta.counts.items():
            setattr(stats, name, getattr(stats, name) + value)
        if delta.cost_usd is None or spend.cost_usd is None:
            spend.cost_usd = None
        else:
            spend.cost_usd += delta.cost_usd
        for path, count in delta.passthrough.items():
            ctx.passthrough[path] = ctx.passthrough.get(path, 0) + count
        for name, (counts, moves) in delta.routes.items():
            self._add_route(ctx, name, counts, moves)
        for name, (calls, failed, seconds, in_flight) in delta.stages.items():
            stage = stats.stage(name)
            stage.calls += calls
            stage.failed += failed
            stage.seconds.extend(seconds)
            link.in_flight[name] = in_flight
            stage.in_flight = sum(other.in_flight.get(name, 0) for other in self.links if other.alive)

    @staticmethod
    def _add_route(ctx: RunContext, name: str, counts: list[dict[str, int]], moves: dict[Any, int]) -> None:
        """A worker's calls on route ``name`` into the run's route, which the report reads."""
        route = ctx.route(name)
        if route is None:
            return
        for target, added in zip(route.targets, counts, strict=False):
            for key, value in added.items():
                target.counts[key] = target.counts.get(key, 0) + value
        for move, calls in moves.items():
            route.moves[move] = route.moves.get(move, 0) + calls

    async def _lost(self, link: _Link) -> None:
        """A worker died: its chains go to the others from their last committed stage."""
        link.alive = False
        orphans = list(link.assigned.values())
        link.assigned.clear()
        link.to_send = []
        for name in link.in_flight:
            if self._ctx is not None:
                self._ctx.stats.stage(name).in_flight = sum(
                    other.in_flight.get(name, 0) for other in self.links if other.alive
                )
        if not self._closed and self.replacements < (self.workers or 1):
            self.replacements += 1
            asyncio.ensure_future(self._replace())
        for chain, future in orphans:
            if not future.done():
                await self._dispatch(chain, future)

    async def _replace(self) -> None:
        try:
            await self._spawn()
        except Exception:  # no room on the cluster: the others go on
            self._joined.set()
