"""The run context: everything one stage of one item needs, and nothing of how items are admitted.

The runner decides *which* item runs and *when*; the stage executor, the review door, the batch
door and both backends get a :class:`RunContext` instead of the runner. It holds the run's
store and response cache, its counters, clock and random source, the retry policy, the providers,
each model's limiter, what was spent, and the run's state (a fatal error, a stop). A Ray worker
builds one of its own whose store, reads and limiters reach the driver's.

Example::

    ctx = RunContext.local(pipeline, RunSettings(rpm=500), run_id="r1", store=RunStore.open(""))
    await StageExecutor(ctx).run(chain, pipeline.stages[0])
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from chainfleet.chain.review import ReviewHook
from chainfleet.chain.routes import Route, Target
from chainfleet.clock import Clock, SystemClock
from chainfleet.config import RunSettings
from chainfleet.errors import FatalError, InputError
from chainfleet.limits import AdaptiveConcurrency, ModelLimiter
from chainfleet.limits.health import EndpointHealth
from chainfleet.limits.retry import RetryPolicy
from chainfleet.pipeline import Pipeline, RouteTarget, Stage
from chainfleet.providers import Provider, ProviderPool
from chainfleet.providers.prices import Price, price_for
from chainfleet.store.agent_turns import AgentTurns, TurnRow
from chainfleet.store.rows import RevisionRow, StageHit
from chainfleet.store.runstore import RunStore
from chainfleet.store.stats import RunStats
from chainfleet.trace import Tracer

if TYPE_CHECKING:
    from chainfleet.chain.batch import BatchCalls, Batcher
    from chainfleet.limits.group import LimitGroup

__all__ = ["Limiters", "LocalReads", "Reads", "RunContext", "RunState", "Spend"]


@dataclass(eq=False)
class RunState:
    """How the run stands: a fatal error (set by the chain that met it), a broken input, a
    stop (Ctrl-C, a budget). Every chain reads it before spending another retry."""

    fatal: FatalError | None = None
    input_error: InputError | None = None
    #: why admission stopped early, other than a fatal error: "interrupted", "budget ..."
    stopping: str | None = None
    interrupted: bool = False

    @property
    def halted(self) -> bool:
        """Whether admission has stopped early (fatal error, broken input, Ctrl-C, budget)."""
        return bool(self.fatal or self.input_error or self.stopping)

    def fail(self, error: FatalError) -> None:
        """Record the run's first fatal error (later ones say the same thing again)."""
        if self.fatal is None:
            self.fatal = error

    def stop(self, reason: str = "interrupted") -> None:
        """Stop admitting items; chains in flight finish. Safe to call twice."""
        if self.stopping is None:
            self.stopping = reason
        self.interrupted = self.interrupted or reason == "interrupted"


class Spend:
    """What the run has spent: tokens priced per model as calls finish (``cost_usd`` is None
    once any call's price is unknown: a partial sum would be a wrong one)."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.prices = dict(prices)
        self.cost_usd: float | None = 0.0
        self._price_of: dict[str, Price | None] = {}

    def price(self, spec: str) -> Price | None:
        """Model ``spec``'s price (the pipeline's ``prices:``, else the built-in table)."""
        if spec not in self._price_of:  # one look-up per model, not per call
            self._price_of[spec] = price_for(spec, self.prices)
        return self._price_of[spec]

    def add(self, spec: str | None, tokens_in: int, tokens_out: int) -> None:
        if spec is None or self.cost_usd is None:
            return
        price = self.price(spec)
        self.cost_usd = None if price is None else self.cost_usd + price.cost(tokens_in, tokens_out)


def run_prices(pipeline: Pipeline, settings: RunSettings) -> dict[str, Price]:
    """The run's prices over the built-in table: ``--prices`` (``settings.prices``), then the
    pipeline's own ``prices:`` on top."""
    shared = {spec: Price(*pair) for spec, pair in (settings.prices or {}).items()}
    return shared | {spec: Price(p.input, p.output) for spec, p in pipeline.prices.items()}


class Limiters:
    """Each model's one limiter, shared by every stage that uses it, made on first use.

    A model's told limits are ``--rpm``/``--tpm``, else the pipeline's ``limits:``. Real
    providers always get a limiter (it learns their limits from headers and holds the 429
    cooldown gate); ``sim`` only when told a limit.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        rpm: float | None,
        tpm: float | None,
        clock: Clock,
        rng: random.Random,
        group: LimitGroup | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.rpm, self.tpm = rpm, tpm
        self.clock, self.rng, self.group = clock, rng, group
        #: model spec -> its limiter (None: unmetered); the report reads them
        self.by_model: dict[str, ModelLimiter | None] = {}

    def told(self, spec: str) -> tuple[float | None, float | None, bool]:
        """Model ``spec``'s told (rpm, tpm), and whether it is metered at all."""
        configured = self.pipeline.limits.get(spec)
        rpm = self.rpm if self.rpm is not None else (configured.rpm if configured else None)
        tpm = self.tpm if self.tpm is not None else (configured.tpm if configured else None)
        return rpm, tpm, rpm is not None or tpm is not None or not spec.startswith("sim")

    def of(self, spec: str) -> ModelLimiter | None:
        """The limiter of model ``spec`` (None: unmetered)."""
        if spec in self.by_model:
            return self.by_model[spec]
        rpm, tpm, metered = self.told(spec)
        limiter = None
        if metered:
            group = (self.group, spec) if self.group else None
            limiter = ModelLimiter(rpm=rpm, tpm=tpm, clock=self.clock, rng=self.rng, group=group)
        self.by_model[spec] = limiter
        return limiter

    def of_target(self, route: str, target: RouteTarget) -> tuple[str, ModelLimiter | None]:
        """The limiter of a route's target and the name it is kept under: one per model and
        key (two keys of one provider are two limiters; a target on the provider's usual key
        shares the model's). Its told limits: the target's own, else the model's."""
        key, rpm, tpm, metered = self.told_target(target)
        if key not in self.by_model:
            group = (self.group, key) if self.group else None
            limiter = ModelLimiter(rpm=rpm, tpm=tpm, clock=self.clock, rng=self.rng, group=group)
            self.by_model[key] = limiter if metered else None
        return key, self.by_model[key]

    def told_target(self, target: RouteTarget) -> tuple[str, float | None, float | None, bool]:
        """A route target's limiter name (see :meth:`of_target`), its told (rpm, tpm), and
        whether it is metered at all (the Ray backend makes one limiter actor per name)."""
        key = target.model
        if target.own_endpoint:
            key += f" ({target.api_key_env or target.base_url})"
        rpm, tpm, metered = self.told(target.model)
        rpm = target.rpm if target.rpm is not None else rpm
        tpm = target.tpm if target.tpm is not None else tpm
        return key, rpm, tpm, metered or rpm is not None or tpm is not None


class Reads(Protocol):
    """The store look-ups a stage makes: here on the run's store, on a Ray worker questions
    for the driver's."""

    async def stage(self, item_id: str, stage: str, key: str) -> StageHit | None:
        """A result of ``stage`` for this input already in the store."""

    async def revision(self, item_id: str, stage: str, key: str, run_id: str | None) -> RevisionRow | None:
        """A try of a tracked stage made from this input (in run ``run_id``, or any run)."""

    async def cached(self, key: str) -> StageHit | None:
        """A cached response for this request, if any."""

    async def turns(self, item_id: str, stage: str, key: str, run_id: str | None) -> list[TurnRow]:
        """An agent's stored steps for this input (of run ``run_id``, or the latest run's)."""


class LocalReads:
    """:class:`Reads` on this process's run store and response cache."""

    def __init__(self, store: RunStore, cache: RunStore | None) -> None:
        self.store, self.cache = store, cache

    async def stage(self, item_id: str, stage: str, key: str) -> StageHit | None:
        return self.store.find_stage(item_id, stage, key)

    async def revision(self, item_id: str, stage: str, key: str, run_id: str | None) -> RevisionRow | None:
        return self.store.find_revision(item_id, stage, key, run_id=run_id)

    async def cached(self, key: str) -> StageHit | None:
        return self.cache.cache_get(key) if self.cache is not None else None

    async def turns(self, item_id: str, stage: str, key: str, run_id: str | None) -> list[TurnRow]:
        return AgentTurns(self.store).load(item_id, stage, key, run_id)


@dataclass(eq=False, kw_only=True)
class RunContext:
    """What one stage of one item needs. See the module docstring."""

    pipeline: Pipeline
    settings: RunSettings
    run_id: str
    store: RunStore
    #: the response cache for real providers at temperature 0 (None: off)
    cache: RunStore | None
    reads: Reads
    stats: RunStats
    clock: Clock
    rng: random.Random
    retry: RetryPolicy
    pool: ProviderPool
    limits: Limiters
    spend: Spend
    state: RunState
    #: the review door: parks items that need a person, takes decisions on at resume
    review: ReviewHook
    #: the batch door (chainfleet.chain.batch), when any stage is in batch mode
    batch: Batcher | None = None
    #: with ``--concurrency auto``: the controller every call reports to
    adaptive: AdaptiveConcurrency | None = None
    #: reuse stage results already in the store (``--resume``)
    reuse: bool = False
    #: the clock's reading where this session's timeline starts (calls are kept relative to it)
    t0: float = 0.0
    #: providers given by the caller (the Ray backend sends them to its workers)
    provider_overrides: dict[str, Provider] = field(default_factory=dict)
    #: connection-failure streaks per endpoint: a dead base URL stops the run
    health: EndpointHealth | None = None
    #: the user's own chains (chainfleet.code): paths called that no limiter knows -> calls
    #: (passed through unlimited; the report warns of them)
    passthrough: dict[str, int] = field(default_factory=dict)
    #: agent stages' tools from outside the pipeline file (MCP servers), by stage name: each a
    #: chainfleet.chain.agent.Tool (typed loosely: that module builds on this one)
    agent_tools: dict[str, list[Any]] = field(default_factory=dict)
    #: where an agent's steps are written (``save(run_id, row)``): the run store's table here,
    #: events for the driver on a Ray worker (None: ``AgentTurns(store)``)
    turn_writer: Any = None
    #: each route's decisions and counts, made on first use (see :meth:`route`)
    routes: dict[str, Route] = field(default_factory=dict)
    #: the run's tracer (chainfleet.trace): does nothing unless tracing is on (``--otel``)
    tracer: Tracer = field(default_factory=Tracer)

    @classmethod
    def local(
        cls,
        pipeline: Pipeline,
        settings: RunSettings,
        *,
        run_id: str,
        store: RunStore,
        cache: RunStore | None = None,
        clock: Clock | None = None,
        providers: Mapping[str, Provider] | None = None,
        seed: int | None = None,
        group: LimitGroup | None = None,
        review: ReviewHook | None = None,
    ) -> RunContext:
        """A context whose store, cache and limiters are this process's own."""
        clock = clock or SystemClock()
        rng = random.Random(seed)
        overrides = dict(providers or {})
        return cls(
            pipeline=pipeline,
            settings=settings,
            run_id=run_id,
            store=store,
            cache=cache,
            reads=LocalReads(store, cache),
            stats=RunStats(),
            clock=clock,
            rng=rng,
            retry=RetryPolicy(max_attempts=settings.max_attempts),
            pool=ProviderPool(pipeline, clock=clock, overrides=dict(overrides)),
            limits=Limiters(pipeline, rpm=settings.rpm, tpm=settings.tpm, clock=clock, rng=rng, group=group),
            spend=Spend(run_prices(pipeline, settings)),
            state=RunState(),
            review=review or ReviewHook(pipeline, store, run_id),
            reuse=settings.resume,
            provider_overrides=overrides,
            health=EndpointHealth(clock),
        )

    @property
    def halted(self) -> bool:
        return self.state.halted

    def route(self, spec: str) -> Route | None:
        """The route model name ``spec`` stands for (None: a model), its targets' providers
        and limiters made on first use."""
        settings = self.pipeline.routes.get(spec)
        if settings is None:
            return None
        found = self.routes.get(spec)
        if found is None:
            targets = []
            for index, (target, label) in enumerate(zip(settings.targets, settings.labels(), strict=True)):
                provider, model = self.pool.for_target(spec, index)
                _, limiter = self.limits.of_target(spec, target)
                targets.append(Target(index, label, target.model, provider, model, limiter))
            found = self.routes[spec] = Route(spec, settings, targets, clock=self.clock)
        return found

    def batch_calls(self, stage: Stage, item_id: str) -> BatchCalls | None:
        """How a stage in batch mode calls its model (None: online, ``provider.complete``)."""
        if self.batch is None or not self.pipeline.batched(stage):
            return None
        return self.batch.calls(self.pool.for_model(self.pipeline.model_for(stage))[0], item_id)
