"""The runner: many chains at once, capped, isolated, and nothing lost.

How a run goes:

1. ``concurrency`` workers share one iterator over the input. A worker takes the next item only
   when its current chain is finished, so items are admitted lazily (memory does not grow with
   the input) and an item in flight advances before a new one starts (depth first: first
   results arrive early, and an interrupted run has few half-done chains).
2. Each call goes through the retry policy: transient errors are retried with backoff, a
   permanent error fails the item at once, a fatal error (a revoked key, a model that does not
   exist) stops admission for the whole run. One item's failure never touches another's chain.
3. When the main pass is over, failed items get ``retry_passes`` more passes, each starting at
   the stage that failed and keeping the stages that succeeded.
4. Every finished stage result goes to the run store as it arrives; the report and the output
   folder are built from the store at the end.

The runner owns admission; what one stage of one item needs is its
:class:`~chainfleet.chain.context.RunContext`. Use it through :func:`chainfleet.run` /
:func:`chainfleet.arun` (:mod:`chainfleet.runner.api`).

Example::

    runner = Runner(pipeline, RunSettings(concurrency=5), store=RunStore.open("run.db"))
    report = await runner.run(open_input("topics.txt", input_field=pipeline.input))
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from chainfleet.backends import Backend, LocalBackend
from chainfleet.chain.batch import Batcher, batcher_for
from chainfleet.chain.context import RunContext, RunState
from chainfleet.chain.progress import Chain
from chainfleet.clock import Clock
from chainfleet.config import MAX_CONCURRENCY, RunSettings
from chainfleet.errors import ConfigError, FatalError, InputError
from chainfleet.inputs import InputSource, Item
from chainfleet.limits import AdaptiveConcurrency, ModelLimiter
from chainfleet.limits.facts import limit_facts
from chainfleet.limits.group import LimitGroup
from chainfleet.limits.retry import retry_in_next_pass
from chainfleet.pipeline import Pipeline
from chainfleet.providers import Provider
from chainfleet.providers.prices import Price
from chainfleet.report.build import build_report, score_final
from chainfleet.report.estimate import servers_of
from chainfleet.report.model import RunReport
from chainfleet.runner.budget import Budget
from chainfleet.runner.feed import ThreadedFeed
from chainfleet.store.folder import open_cache
from chainfleet.store.runstore import ItemRecord, RunStore
from chainfleet.store.stats import COUNTERS, RunStats
from chainfleet.trace import tracer_for

__all__ = ["MAX_CONCURRENCY", "Runner", "latest_run_id", "new_run_id"]


class Runner:
    """Runs one pipeline over one input with fixed settings. Use :func:`arun` or :func:`run`.

    The runner owns admission (which item runs when, the cap on chains in flight, passes,
    stopping, the budget); everything a stage of one item needs is in its
    :class:`~chainfleet.chain.context.RunContext` (``ctx``), which the backend and the stage
    code get instead of the runner.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        settings: RunSettings | None = None,
        *,
        store: RunStore | None = None,
        clock: Clock | None = None,
        providers: Mapping[str, Provider] | None = None,
        backend: Backend | None = None,
        saved: Mapping[str, Any] | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> None:
        settings = with_pipeline_otel((settings or RunSettings()).replace(**options), pipeline)
        concurrency = settings.concurrency
        adaptive = None
        if concurrency == "auto":
            adaptive = AdaptiveConcurrency(cap=settings.max_concurrency)
            concurrency = settings.max_concurrency
        self.concurrency = concurrency or pipeline.concurrency
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if self.concurrency > MAX_CONCURRENCY:
            raise ConfigError(f"concurrency {self.concurrency:,} is over the cap of {MAX_CONCURRENCY:,}")
        if settings.retry_passes < 0:
            raise ConfigError("retry_passes must not be negative")
        self.settings = settings
        self.pipeline = pipeline
        self.retry_passes = settings.retry_passes
        store = store or RunStore.open("")  # "" = a private temporary file: memory stays flat
        run_id = settings.run_id or new_run_id()
        cache = open_cache(settings.cache)
        group = LimitGroup(settings.limit_group) if settings.limit_group else None
        #: what every stage of every item needs (see chainfleet.chain.context)
        self.ctx = RunContext.local(
            pipeline,
            settings,
            run_id=run_id,
            store=store,
            cache=None if cache is False else (cache or store),
            clock=clock,
            providers=providers,
            seed=seed,
            group=group,
        )
        self.ctx.adaptive = adaptive
        #: the run's traces (--otel): a no-op unless tracing is on
        self.ctx.tracer = tracer_for(settings, run_id=run_id, project=pipeline.name, clock=self.ctx.clock)
        self.ctx.batch = batcher_for(pipeline, store, run_id, self.ctx.clock)
        self.budget = None
        if settings.max_cost is not None or settings.max_tokens is not None:
            self.budget = Budget(max_cost=settings.max_cost, max_tokens=settings.max_tokens)
        self.extra_settings = dict(saved or {})
        self._in_flight: dict[int, Chain] = {}
        #: this process's session of the run (1 for a new run; see chainfleet.store.sessions)
        self.session = 0
        #: quality scores of finished items not yet in the store (written 1,000 at a time)
        self._scores: list[tuple[int, dict[str, Any]]] = []
        #: items in the input when known (the input was scanned first), for progress
        self.total: int | None = None
        #: called with each item's record as it is kept (``--results -``), ``index`` included
        self.on_record: Callable[[dict[str, Any]], None] | None = None
        self._streamed = False
        self._stages = list(pipeline.stages)
        #: where admitted chains run: here (local) or on a Ray cluster
        self.backend: Backend = backend or LocalBackend()

    # -- what the progress display and the CLI read ------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def store(self) -> RunStore:
        return self.ctx.store

    @property
    def stats(self) -> RunStats:
        return self.ctx.stats

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    @property
    def adaptive(self) -> AdaptiveConcurrency | None:
        return self.ctx.adaptive

    @property
    def batch(self) -> Batcher | None:
        return self.ctx.batch

    @property
    def limiters(self) -> dict[str, ModelLimiter | None]:
        """Each model's limiter (None: unmetered), for the progress display and the report."""
        return self.ctx.limits.by_model

    @property
    def cost_usd(self) -> float | None:
        return self.ctx.spend.cost_usd

    @property
    def fatal(self) -> FatalError | None:
        return self.ctx.state.fatal

    @property
    def interrupted(self) -> bool:
        return self.ctx.state.interrupted

    # -- the run -----------------------------------------------------------------------------------

    @property
    def halted(self) -> bool:
        """Whether admission has stopped early (fatal error, broken input, Ctrl-C, budget)."""
        return self.ctx.state.halted

    def stop(self, reason: str = "interrupted") -> None:
        """Stop admitting items; chains in flight finish, or with ``interrupted`` (Ctrl-C,
        SIGTERM) finish the stage they are in and start no other. Safe to call twice."""
        self.ctx.state.stop(reason)

    async def run(self, source: InputSource) -> RunReport:
        """Run every item of ``source`` and return the report. Never raises for a failed item.

        Cancelled (a second Ctrl-C), it re-raises; :meth:`salvage` then records what was done.
        """
        ctx = self.ctx
        ctx.pool.check()
        self._failed: list[Chain] = []
        self._items: Iterator[Item] = iter(())
        try:
            if ctx.batch is not None:  # an endpoint without a batch API: exit 2, nothing sent
                await ctx.batch.check(self.pipeline, ctx.pool)
            await self.backend.start(ctx, self.concurrency)
            self._begin_session()
            self._items = iter(source)
            self._streamed = source.streamed
            if source.streamed:  # a pipe: read on a thread, so a slow line never holds the loop
                feed = ThreadedFeed(self._items, asyncio.get_running_loop())
                self._failed = await self._pass(lambda: self._take_fed(feed))
            else:
                self._failed = await self._pass(_taking(self._admit(self._items)))
            for _ in range(self.retry_passes):
                failed = self._failed
                retry = [c for c in failed if c.error is not None and retry_in_next_pass(c.error)]
                if not retry or self.halted:
                    break
                kept = [c for c in failed if c not in retry]
                for chain in retry:
                    chain.error = chain.error_stage = None
                self.stats.failed_now -= len(retry)  # they are in play again
                self._failed = kept + await self._pass(_taking(iter(retry)))
            await self.backend.settle(ctx)
            self._finish()
        finally:
            await self.backend.aclose()
            self.store.flush()
            if ctx.cache is not None and ctx.cache is not self.store:
                ctx.cache.flush()
            if ctx.batch is not None:
                await ctx.batch.aclose()
            await ctx.pool.aclose()
            ctx.tracer.shutdown()
        return build_report(self.store, self.run_id)

    def _begin_session(self) -> None:
        """Start (or go on with) the run and open this process's session of it. The calls of
        this session are timed from where the run's timeline ended, so a resumed run's timeline
        lays its sessions end to end."""
        self.store.begin_run(self.run_id, pipeline=self.pipeline.name, settings=self._settings())
        self.session = self.store.begin_session(self.run_id)
        self.ctx.t0 = self.clock.now() - self.store.sessions.calls_end(self.run_id)
        self.store.session_snapshot = lambda: (self.run_id, self.session, self.session_stats())

    @property
    def status(self) -> str:
        """How this session ends: ``interrupted``, ``stopped`` (fatal error, budget, input) or
        ``done``."""
        return "interrupted" if self.interrupted else ("stopped" if self.halted else "done")

    def session_stats(self, *, final: bool = False) -> dict[str, Any]:
        """This session's counters (kept in the store with every commit); ``final`` adds what
        only its end knows: how it stopped, the limits each model held, the concurrency."""
        stats = self.stats
        numbers: dict[str, Any] = {
            name: getattr(stats, name) for name in (*COUNTERS, "wall_seconds", "admitted", "done")
        }
        numbers["cost_usd"] = self.cost_usd
        if self.ctx.routes:  # per target calls, tokens, cost, 429s, and why traffic moved
            price = self.ctx.spend.price
            numbers["routes"] = {name: route.stats(price) for name, route in self.ctx.routes.items()}
        if final:
            numbers["facts"] = self._facts()
        return numbers

    def _facts(self) -> dict[str, Any]:
        models = {}
        succeeded = self._succeeded_by_model()
        for spec, limiter in self.ctx.limits.by_model.items():
            if limiter is None:
                continue
            models[spec] = {
                "rpm_limit": limiter.limit_rpm,
                "tpm_limit": limiter.limit_tpm,
                "learned": limiter.told_rpm is None and limiter.limit_rpm is not None,
                **limit_facts(limiter, succeeded=succeeded.get(spec)),
            }
        state = self.ctx.state
        return {
            "concurrency": self.concurrency,
            "concurrency_mode": "auto" if self.adaptive is not None else "fixed",
            "concurrency_peak": round(self.adaptive.max_seen, 1) if self.adaptive is not None else None,
            "stopped": str(state.fatal) if state.fatal else state.stopping,
            "stopped_kind": _stopped_kind(state),
            "input_error": str(state.input_error) if state.input_error else None,
            "models": models,
            # the user's own chains: paths passed through unlimited (a warning in the report)
            "passthrough": dict(self.ctx.passthrough),
        }

    def _succeeded_by_model(self) -> dict[str, int]:
        """Calls that succeeded per model this session (a stage's judge calls count under the
        stage's model)."""
        found: dict[str, int] = {}
        for stage in self._stages:
            if stage.is_tool or stage.name not in self.stats.stages:
                continue
            counted = self.stats.stages[stage.name]
            spec = self.pipeline.model_for(stage)
            found[spec] = found.get(spec, 0) + counted.calls - counted.failed
        return found

    def _finish(self) -> None:
        self._save_scores()
        for chain in sorted(self._failed, key=lambda c: c.item.index):
            self._save_item(chain, "failed")
        if self.halted and not self._streamed:  # (a pipe is not read past where the run stopped)
            self._skip_rest(self._items)
        status = self.status
        self.store.end_run(self.run_id, status=status, summary={"done": self.stats.done})
        self.store.end_session(self.run_id, status, self.session_stats(final=True))

    def salvage(self) -> RunReport:
        """After a hard stop (the run was cancelled): record the chains in flight and the items
        never admitted, keep every finished stage result, and build the report."""
        self.ctx.state.stop("interrupted")
        self.ctx.state.interrupted = True
        if self.stats.first_admission is not None:
            self.stats.last_result = self.clock.now()
        for chain in sorted(self._in_flight.values(), key=lambda c: c.item.index):
            self._save_item(chain, "skipped")
        self._in_flight.clear()
        self._finish()
        self.store.flush()
        return build_report(self.store, self.run_id)

    def _admit(self, items: Iterator[Item]) -> Iterator[Chain]:
        while not self.halted:
            try:
                item = next(items)
            except StopIteration:
                return
            except InputError as exc:
                self.ctx.state.input_error = exc
                return
            yield Chain(item)

    async def _take_fed(self, feed: ThreadedFeed) -> Chain | None:
        """The next chain from a piped input, as :meth:`_admit` gives a file's."""
        if self.halted:
            return None
        try:
            item = await feed.next()
        except InputError as exc:
            self.ctx.state.input_error = exc
            return None
        return None if item is None or self.halted else Chain(item)

    async def _pass(self, take: Callable[[], Awaitable[Chain | None]]) -> list[Chain]:
        """Run the chains ``take`` gives with up to ``concurrency`` workers; return the chains
        that failed.

        A worker starts the next one only once it has taken a chain, so there are never more
        workers than chains (plus one): ``-c 10000`` on 3 items makes 4 tasks, not 10,000."""
        failed: list[Chain] = []

        async def worker() -> None:
            while not self.halted:
                if self.budget is not None and self.budget.exhausted(self.ctx):
                    self.ctx.state.stop(self.budget.reason)
                    return
                if self.adaptive is not None:
                    await self.adaptive.acquire()
                try:
                    chain = await take()  # shared: the next item when free
                    if chain is None:
                        return
                    if len(workers) < self.concurrency:
                        workers.append(asyncio.ensure_future(worker()))
                    await self._run_chain(chain, failed)
                finally:
                    if self.adaptive is not None:
                        await self.adaptive.release()

        workers = [asyncio.ensure_future(worker())]
        try:
            while pending := [task for task in workers if not task.done()]:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # a worker's own bug: raise it now
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        return failed

    async def _run_chain(self, chain: Chain, failed: list[Chain]) -> None:
        if self.stats.first_admission is None:
            self.stats.first_admission = self.clock.now()
        self.stats.admitted += 1
        self.stats.in_flight += 1
        if self.ctx.tracer.on:
            self.ctx.tracer.item_started(chain)
        self._in_flight[chain.item.index] = chain
        try:
            await self.backend.advance(self.ctx, chain)
        finally:
            self.stats.in_flight -= 1
        del self._in_flight[chain.item.index]
        self.stats.last_result = self.clock.now()
        if chain.parked is not None:
            self._save_item(chain, "needs_review")  # never failed: it waits for a person
        elif chain.stopped_at is not None:
            self._save_item(chain, "skipped")  # interrupted between stages: resume goes on
        elif chain.error is None:
            self.stats.done += 1
            self._save_item(chain, "succeeded")
        else:
            self.stats.failed_now += 1
            failed.append(chain)

    # -- bookkeeping -------------------------------------------------------------------------------

    def _save_item(self, chain: Chain, status: str) -> None:
        """Record an item's outcome, with the attempts and seconds it really took: on resume,
        those of the earlier sessions too."""
        error = None
        if chain.error is not None:
            kind = getattr(chain.error, "kind", type(chain.error).__name__)
            error = {"stage": chain.error_stage, "type": kind, "message": str(chain.error)}
        if status == "succeeded":
            self._score(chain)
        attempts, seconds = chain.attempts, chain.seconds
        if self.session > 1:
            before = self.store.sessions.item_calls_before(self.run_id, chain.item.index, self.session)
            attempts, seconds = attempts + before[0], seconds + before[1]
        record = ItemRecord(
            index=chain.item.index,
            id=chain.item.id,
            input=chain.item.fields,
            status=status,
            error=error,
            attempts=attempts,
            seconds=seconds,
        )
        self.store.save_item(self.run_id, record)
        if self.ctx.tracer.on:
            self.ctx.tracer.item_ended(chain, status, error)
        if self.on_record is not None:
            row = replace(record, outputs=dict(chain.outputs)).to_json()
            self.on_record({"index": record.index, **row})

    def _score(self, chain: Chain) -> None:
        """Score the final output's quality as the item finishes (while other calls are out),
        so the report, built from the store, does not score a million outputs at the end."""
        final = chain.outputs.get(self._stages[-1].name, "")
        self._scores.append((chain.item.index, score_final(final, chain.item.fields, self.pipeline.input)))
        if len(self._scores) >= 1000:
            self._save_scores()

    def _save_scores(self) -> None:
        if self._scores:
            self.store.save_quality(self.run_id, self._scores)
            self._scores = []

    def _skip_rest(self, items: Iterator[Item]) -> None:
        """Record items never admitted (the run stopped) so results.jsonl lists every item."""
        state = self.ctx.state
        reason = state.fatal or state.input_error or state.stopping
        error = {
            "stage": None,
            "type": "skipped",
            "message": f"not run: the run stopped ({reason})",
        }
        try:
            self.store.save_skipped(self.run_id, ((i.index, i.id, i.fields) for i in items), error)
        except InputError:
            pass  # already stopping because of the input; what was read is recorded

    def _settings(self) -> dict[str, Any]:
        return {
            **self.extra_settings,
            "concurrency": self.concurrency,
            "max_attempts": self.ctx.retry.max_attempts,
            "retry_passes": self.retry_passes,
            "backend": self.backend.name,
            "models": sorted({self.pipeline.model_for(s) for s in self._stages if not s.is_tool}),
            "stages_order": [s.name for s in self._stages],
            "input_field": self.pipeline.input,
            # the user's own chain (chainfleet.code): its stages are its calls' labels
            "code": self.pipeline.work is not None,
            # each stage's server (None: a tool step), for the one-at-a-time estimate
            "servers": servers_of(self.pipeline),
            # each agent stage's price (USD per 1M tokens in, out; None: unknown), so the
            # report prices its turns
            "agent_prices": {
                s.name: _price_pair(self.ctx.spend.price(self.pipeline.model_for(s)))
                for s in self._stages
                if s.is_agent
            },
        }


def _taking(chains: Iterator[Chain]) -> Callable[[], Awaitable[Chain | None]]:
    """``chains`` as :meth:`Runner._pass` takes them: one at a time, None at the end."""

    async def take() -> Chain | None:
        return next(chains, None)

    return take


def with_pipeline_otel(settings: RunSettings, pipeline: Pipeline) -> RunSettings:
    """The settings with the pipeline's ``otel:`` under them: it turns tracing on, and its
    endpoint, sample and content apply where the run's own settings left the default."""
    otel = pipeline.otel
    if otel is None:
        return settings
    return settings.replace(
        otel=True,
        otel_endpoint=settings.otel_endpoint or otel.endpoint,
        otel_sample=otel.sample if settings.otel_sample == 1.0 else settings.otel_sample,
        otel_content=settings.otel_content or otel.content,
    )


def latest_run_id(store: RunStore) -> str | None:
    """The id of the latest run in ``store`` (None when it holds none)."""
    row = store.db.execute("SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1").fetchone()
    return row[0] if row else None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _stopped_kind(state: RunState) -> str | None:
    if state.fatal:
        return state.fatal.kind
    return "interrupted" if state.interrupted else None


def _price_pair(price: Price | None) -> list[float] | None:
    return None if price is None else [price.input, price.output]
