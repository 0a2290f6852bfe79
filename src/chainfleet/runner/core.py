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

Example::

    report = run(Pipeline.from_yaml("examples/content.yaml"), "examples/topics.txt", concurrency=5)
    print(report.items_succeeded, report.time_saved_pct)
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chainfleet.backends import Backend, LocalBackend, backend_for
from chainfleet.chain.batch import BatchCalls, Batcher, attach_batcher, with_batch
from chainfleet.chain.review import ReviewHook
from chainfleet.chain.stage import Chain, StageExecutor
from chainfleet.clock import Clock, SystemClock
from chainfleet.errors import ConfigError, FatalError, InputError
from chainfleet.inputs.source import InputSource, Item, items_from, open_input
from chainfleet.limits.adaptive import AdaptiveConcurrency
from chainfleet.limits.facts import limit_facts
from chainfleet.limits.group import LimitGroup
from chainfleet.limits.limiter import ModelLimiter
from chainfleet.limits.retry import RetryPolicy, retry_in_next_pass
from chainfleet.pipeline.spec import Pipeline, Stage, parse_model
from chainfleet.providers import Provider, ProviderPool
from chainfleet.providers.prices import Price, price_for
from chainfleet.report.build import build_report, score_final
from chainfleet.report.estimate import servers_of
from chainfleet.report.model import RunReport
from chainfleet.report.results import PARQUET_MISSING, ItemFiles, Progress, parquet_available
from chainfleet.store.folder import open_cache, open_store, releasing_out
from chainfleet.store.runstore import ItemRecord, RunStore
from chainfleet.store.stats import COUNTERS, RunStats

__all__ = ["Runner", "arun", "latest_run_id", "run"]

Items = InputSource | Iterable[str | Mapping[str, Any]] | str | os.PathLike[str]

#: the most chains in flight a run may ask for: each one is a task, and past this no provider
#: answers faster, while ten million of them take gigabytes before the first call
MAX_CONCURRENCY = 10_000


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Stop admitting items before the run would spend more than this.

    The projection is what is spent so far plus, for every chain in flight and the next one,
    what a chain has cost on average (before any chain has finished: its calls' ``max_tokens``
    plus their prompts, priced). Chains in flight always finish.
    """

    max_cost: float | None = None
    max_tokens: int | None = None

    @property
    def reason(self) -> str:
        parts = []
        if self.max_cost is not None:
            parts.append(f"${self.max_cost:g}")
        if self.max_tokens is not None:
            parts.append(f"{self.max_tokens:,} tokens")
        return f"budget of {' / '.join(parts)} reached"

    def exhausted(self, runner: Runner) -> bool:
        stats = runner.stats
        chains = stats.done + stats.failed_now
        ahead = stats.in_flight + 1
        tokens = stats.input_tokens + stats.output_tokens
        if self.max_tokens is not None:
            per_chain = tokens / chains if chains else runner.chain_token_estimate()
            if tokens + ahead * per_chain > self.max_tokens:
                return True
        if self.max_cost is not None:
            if runner.cost_usd is None:
                return False  # unknown prices: only a token budget can hold
            per_chain_cost = runner.cost_usd / chains if chains else runner.chain_cost_estimate()
            if runner.cost_usd + ahead * per_chain_cost > self.max_cost:
                return True
        return False


class Runner:
    """Runs one pipeline over one input with fixed settings. Use :func:`arun` or :func:`run`."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        retry_passes: int = 1,
        store: RunStore | None = None,
        run_id: str | None = None,
        clock: Clock | None = None,
        providers: Mapping[str, Provider] | None = None,
        seed: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        adaptive: AdaptiveConcurrency | None = None,
        reuse: bool = False,
        cache: RunStore | None | Literal[False] = None,
        budget: Budget | None = None,
        settings: Mapping[str, Any] | None = None,
        backend: Backend | None = None,
        limit_group: LimitGroup | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.concurrency = concurrency or pipeline.concurrency
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if self.concurrency > MAX_CONCURRENCY:
            raise ConfigError(f"concurrency {self.concurrency:,} is over the cap of {MAX_CONCURRENCY:,}")
        if retry_passes < 0:
            raise ConfigError("retry_passes must not be negative")
        self.retry = retry or RetryPolicy()
        self.retry_passes = retry_passes
        self.clock = clock or SystemClock()
        self.store = store or RunStore.open("")  # "" = a private temporary file: memory stays flat
        self.run_id = run_id or new_run_id()
        #: providers given by the caller (the Ray backend sends them to its workers)
        self.provider_overrides = dict(providers or {})
        self.pool = ProviderPool(pipeline, clock=self.clock, overrides=dict(self.provider_overrides))
        self.stats = RunStats()
        self.rng = random.Random(seed)
        self.rpm, self.tpm = rpm, tpm
        self.limiters: dict[str, ModelLimiter | None] = {}
        #: with ``--concurrency auto``: the chains in flight adapt, up to ``concurrency``
        self.adaptive = adaptive
        #: reuse stage results already in the store (``--resume``)
        self.reuse = reuse
        #: the response cache for real providers at temperature 0: a store, or False for none
        #: (None: this run's own store)
        self.cache: RunStore | None = None if cache is False else (cache or self.store)
        self.budget = budget
        self.extra_settings = dict(settings or {})
        #: ``--limit-group``: the request budgets shared with other jobs on this machine
        self.limit_group = limit_group
        self.prices = {spec: Price(p.input, p.output) for spec, p in pipeline.prices.items()}
        self.cost_usd: float | None = 0.0
        self._price_of: dict[str, Price | None] = {}
        self.fatal: FatalError | None = None
        self.input_error: InputError | None = None
        #: why admission stopped early, other than a fatal error: "interrupted", "budget ..."
        self.stopping: str | None = None
        self.interrupted = False
        self._in_flight: dict[int, Chain] = {}
        self._t0 = 0.0
        #: this process's session of the run (1 for a new run; see chainfleet.store.sessions)
        self.session = 0
        #: quality scores of finished items not yet in the store (written 1,000 at a time)
        self._scores: list[tuple[int, dict[str, Any]]] = []
        #: items in the input when known (the input was scanned first), for progress
        self.total: int | None = None
        self._stages = list(pipeline.stages)
        #: runs one stage for one chain
        self.stages = StageExecutor(self)
        #: where admitted chains run: here (local) or on a Ray cluster
        self.backend: Backend = backend or LocalBackend()
        #: parks items that need a person (``review:``) and takes reviewers' decisions on
        self.review = ReviewHook(self)
        #: batch mode's jobs (chainfleet.chain.batch), when any stage is in batch mode
        self.batch: Batcher | None = None

    def batch_calls(self, stage: Stage, item_id: str) -> BatchCalls | None:
        """How a stage in batch mode calls its model (None: online, ``provider.complete``)."""
        if self.batch is None or not self.pipeline.batched(stage):
            return None
        return self.batch.calls(self.pool.for_model(self.pipeline.model_for(stage))[0], item_id)

    # -- the run -----------------------------------------------------------------------------------

    @property
    def halted(self) -> bool:
        """Whether admission has stopped early (fatal error, broken input, Ctrl-C, budget)."""
        return bool(self.fatal or self.input_error or self.stopping)

    def stop(self, reason: str = "interrupted") -> None:
        """Stop admitting items (Ctrl-C, SIGTERM); chains in flight finish. Safe to call twice."""
        if self.stopping is None:
            self.stopping = reason
        self.interrupted = self.interrupted or reason == "interrupted"

    async def run(self, source: InputSource) -> RunReport:
        """Run every item of ``source`` and return the report. Never raises for a failed item.

        Cancelled (a second Ctrl-C), it re-raises; :meth:`salvage` then records what was done.
        """
        self.pool.check()
        self._failed: list[Chain] = []
        self._items: Iterator[Item] = iter(())
        try:
            if self.batch is not None:
                await self.batch.check(self)  # an endpoint without a batch API: exit 2, nothing sent
            await self.backend.start(self)
            self._begin_session()
            self._items = iter(source)
            self._failed = await self._pass(self._admit(self._items))
            for _ in range(self.retry_passes):
                failed = self._failed
                retry = [c for c in failed if c.error is not None and retry_in_next_pass(c.error)]
                if not retry or self.halted:
                    break
                kept = [c for c in failed if c not in retry]
                for chain in retry:
                    chain.error = chain.error_stage = None
                self.stats.failed_now -= len(retry)  # they are in play again
                self._failed = kept + await self._pass(iter(retry))
            await self.backend.settle(self)
            self._finish()
        finally:
            await self.backend.aclose()
            self.store.flush()
            if self.cache is not None and self.cache is not self.store:
                self.cache.flush()
            if self.batch is not None:
                await self.batch.aclose()
            await self.pool.aclose()
        return build_report(self.store, self.run_id)

    def _begin_session(self) -> None:
        """Start (or go on with) the run and open this process's session of it. The calls of
        this session are timed from where the run's timeline ended, so a resumed run's timeline
        lays its sessions end to end."""
        self.store.begin_run(self.run_id, pipeline=self.pipeline.name, settings=self._settings())
        self.session = self.store.begin_session(self.run_id)
        self._t0 = self.clock.now() - self.store.sessions.calls_end(self.run_id)
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
        if final:
            numbers["facts"] = self._facts()
        return numbers

    def _facts(self) -> dict[str, Any]:
        models = {}
        succeeded = self._succeeded_by_model()
        for spec, limiter in self.limiters.items():
            if limiter is None:
                continue
            models[spec] = {
                "rpm_limit": limiter.limit_rpm,
                "tpm_limit": limiter.limit_tpm,
                "learned": limiter.told_rpm is None and limiter.limit_rpm is not None,
                **limit_facts(limiter, succeeded=succeeded.get(spec)),
            }
        return {
            "concurrency": self.concurrency,
            "concurrency_mode": "auto" if self.adaptive is not None else "fixed",
            "concurrency_peak": round(self.adaptive.max_seen, 1) if self.adaptive is not None else None,
            "stopped": str(self.fatal) if self.fatal else self.stopping,
            "stopped_kind": self.fatal.kind if self.fatal else ("interrupted" if self.interrupted else None),
            "input_error": str(self.input_error) if self.input_error else None,
            "models": models,
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
        if self.halted:
            self._skip_rest(self._items)
        status = self.status
        self.store.end_run(self.run_id, status=status, summary={"done": self.stats.done})
        self.store.end_session(self.run_id, status, self.session_stats(final=True))

    def salvage(self) -> RunReport:
        """After a hard stop (the run was cancelled): record the chains in flight and the items
        never admitted, keep every finished stage result, and build the report."""
        self.interrupted = True
        self.stopping = self.stopping or "interrupted"
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
                self.input_error = exc
                return
            yield Chain(item)

    async def _pass(self, chains: Iterator[Chain]) -> list[Chain]:
        """Run ``chains`` with up to ``concurrency`` workers; return the chains that failed.

        A worker starts the next one only once it has taken a chain, so there are never more
        workers than chains (plus one): ``-c 10000`` on 3 items makes 4 tasks, not 10,000."""
        failed: list[Chain] = []

        async def worker() -> None:
            while not self.halted:
                if self.budget is not None and self.budget.exhausted(self):
                    self.stopping = self.stopping or self.budget.reason
                    return
                if self.adaptive is not None:
                    await self.adaptive.acquire()
                try:
                    chain = next(chains, None)  # shared iterator: the next item when free
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
        self._in_flight[chain.item.index] = chain
        try:
            await self._advance(chain)
        finally:
            self.stats.in_flight -= 1
        del self._in_flight[chain.item.index]
        self.stats.last_result = self.clock.now()
        if chain.parked is not None:
            self._save_item(chain, "needs_review")  # never failed: it waits for a person
        elif chain.error is None:
            self.stats.done += 1
            self._save_item(chain, "succeeded")
        else:
            self.stats.failed_now += 1
            failed.append(chain)

    async def _advance(self, chain: Chain) -> None:
        """Run the chain's remaining stages where the backend runs them; a failure is recorded
        on the chain."""
        await self.backend.advance(self, chain)

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
        self.store.save_item(
            self.run_id,
            ItemRecord(
                index=chain.item.index,
                id=chain.item.id,
                input=chain.item.fields,
                status=status,
                error=error,
                attempts=attempts,
                seconds=seconds,
            ),
        )

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

    def chain_token_estimate(self) -> float:
        """Tokens one chain may use, before any has finished: prompts unknown, ~500 each."""
        return float(sum(s.max_tokens + 500 for s in self._stages if not s.is_tool))

    def chain_cost_estimate(self) -> float:
        total = 0.0
        for stage in self._stages:
            if stage.is_tool:
                continue
            price = price_for(self.pipeline.model_for(stage), self.prices)
            if price is not None:
                total += price.cost(500, stage.max_tokens)
        return total

    def _skip_rest(self, items: Iterator[Item]) -> None:
        """Record items never admitted (the run stopped) so results.jsonl lists every item."""
        reason = self.fatal or self.input_error or self.stopping
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
            "max_attempts": self.retry.max_attempts,
            "retry_passes": self.retry_passes,
            "backend": self.backend.name,
            "models": sorted({self.pipeline.model_for(s) for s in self._stages if not s.is_tool}),
            "stages_order": [s.name for s in self._stages],
            "input_field": self.pipeline.input,
            # each stage's server (None: a tool step), for the one-at-a-time estimate
            "servers": servers_of(self.pipeline),
        }


def latest_run_id(store: RunStore) -> str | None:
    """The id of the latest run in ``store`` (None when it holds none)."""
    row = store.db.execute("SELECT run_id FROM runs ORDER BY started DESC, rowid DESC LIMIT 1").fetchone()
    return row[0] if row else None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def as_source(items: Items, pipeline: Pipeline) -> InputSource:
    """An ``InputSource`` from a path, an ``InputSource``, or an iterable of strings/mappings."""
    if isinstance(items, InputSource):
        return items
    if isinstance(items, str | os.PathLike):
        return open_input(items, input_field=pipeline.input)
    return items_from(items, input_field=pipeline.input)


def with_model(pipeline: Pipeline, model: str) -> Pipeline:
    """A copy of ``pipeline`` whose LLM stages all use ``model`` (the ``--model`` flag)."""
    try:
        parse_model(model, pipeline.providers)
    except ValueError as exc:
        raise ConfigError(str(exc), where="--model") from exc
    data = pipeline.model_dump(exclude={"stages"})
    stages = [s.model_copy(update={"model": None}) for s in pipeline.stages]
    copy = Pipeline.model_validate({**data, "model": model, "stages": stages})
    copy._source, copy._root = pipeline._source, pipeline._root
    return copy


def prepare(
    pipeline: Pipeline,
    items: Items,
    *,
    out: str | os.PathLike[str] | None = None,
    model: str | None = None,
    check_input: bool = True,
    providers: Mapping[str, Provider] | None = None,
    resume: bool = False,
    force: bool = False,
) -> tuple[Pipeline, InputSource, RunStore | None, int | None]:
    """Everything checked and opened before the first call: the one place exit-2 errors arise.

    Applies ``--model``, opens the input, checks every template variable against its fields,
    scans the whole input (when it can be read twice) and opens the run store in ``out``,
    holding the folder (see :mod:`chainfleet.store.folder`; the caller releases it).
    Returns (pipeline, source, store, item count or None).
    """
    if model:
        pipeline = with_model(pipeline, model)
    source = as_source(items, pipeline)
    pipeline.check_fields(
        source.fields, input_name=str(source.path or "the input"), text_lines=source.format == "txt"
    )
    total = None
    try:
        ProviderPool(pipeline, clock=SystemClock(), overrides=dict(providers or {})).check()
    except ConfigError as exc:
        if model:
            raise ConfigError(exc.reason, where="--model") from exc
        raise
    if check_input and source.reiterable:
        total = source.scan(required=[v for v in pipeline.input_fields_needed() if v != "id"])
    store = open_store(out, resume=resume, force=force) if out is not None else None
    return pipeline, source, store, total


@releasing_out
async def arun(
    pipeline: Pipeline,
    items: Items,
    *,
    concurrency: int | Literal["auto"] | None = None,
    out: str | os.PathLike[str] | None = None,
    model: str | None = None,
    max_attempts: int = 4,
    retry_passes: int = 1,
    rpm: float | None = None,
    tpm: float | None = None,
    max_concurrency: int = 64,
    clock: Clock | None = None,
    providers: Mapping[str, Provider] | None = None,
    check_input: bool = True,
    on_start: Callable[[Runner], None] | None = None,
    run_id: str | None = None,
    resume: bool = False,
    cache: str | os.PathLike[str] | bool | None = None,
    max_cost: float | None = None,
    max_tokens: int | None = None,
    settings: Mapping[str, Any] | None = None,
    force: bool = False,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    batch: bool = False,
    limit_group: str | None = None,
    item_files: ItemFiles = "auto",
    on_output: Callable[[], None] | None = None,
    output_progress: Progress | None = None,
    parquet: bool = False,
) -> RunReport:
    """Run ``pipeline`` over ``items`` and return its :class:`RunReport`.

    ``items`` is a file path (txt, JSONL, CSV), an ``InputSource``, or an iterable of strings or
    mappings. With ``out`` the output folder is written (results.jsonl, one markdown file per
    item, report.json, report.md, the run store). ``check_input`` reads the whole input once
    before the first call, so a malformed line fails the run with ``InputError`` up front.

    ``rpm``/``tpm`` limit every model (else the pipeline's ``limits:``, else what the provider's
    headers say). ``concurrency="auto"`` adapts the chains in flight to what the server takes
    (AIMD on 429/503 and rising latency), up to ``max_concurrency``.

    ``resume`` continues the run in ``out``: no stage result already there for the same input
    is called again. ``cache``: None keeps a response cache of real-provider, temperature-0
    calls in the run's store; a folder shares one across runs; False turns it off. The budget
    (``max_cost`` in USD, ``max_tokens``) stops admission before the projected spend passes it.
    ``settings`` are saved with the run (the CLI keeps what ``chainfleet resume`` needs).
    ``limit_group`` names a :class:`~chainfleet.limits.group.LimitGroup`: every job on this
    machine in the same group shares each model's request budget (``--limit-group``).

    ``out`` is held for the whole run: another process (or run) on it is refused with
    ``ConfigError``, and so is a non-empty folder that holds no run, unless ``force``.

    ``backend="ray"`` runs the chains in ``workers`` Ray actors (default: one per CPU of the
    cluster, at most ``concurrency``) on the cluster at ``address`` (``auto``, ``HOST:PORT`` or
    ``ray://HOST:10001``; default: ``RAY_ADDRESS``, else a Ray node started here on 127.0.0.1
    only). The store, the output folder and the report are the same as a local run's.

    ``batch`` puts every LLM stage in batch mode (as ``mode: batch`` does; see
    :mod:`chainfleet.chain.batch`); without ``concurrency``, batch mode keeps ``batch.concurrency``
    chains in flight.

    The output phase (after the last result): ``on_output`` is called as it starts (the CLI
    lets a signal stop it there); ``item_files`` is ``auto`` (one file per item for runs of at
    most 10,000 items), ``all`` or ``none``; ``output_progress(done, total)`` follows it;
    ``parquet`` writes results.parquet beside results.jsonl (it needs pyarrow: the ``parquet``
    extra; without it ``ConfigError`` before any call).
    """
    if parquet and not parquet_available():
        raise ConfigError(PARQUET_MISSING, where="--parquet")
    if batch:
        pipeline = with_batch(pipeline)
    batched = any(pipeline.batched(stage) for stage in pipeline.stages)
    if batched and concurrency == "auto":
        raise ConfigError("--concurrency auto is for online calls; batch mode has no use for it")
    if batched and backend != "local":
        raise ConfigError("batch mode runs on the local backend: the provider runs the batch, not Ray")
    engine = backend_for(backend, address=address, workers=workers)
    if batched and concurrency is None:
        concurrency = max(pipeline.concurrency, pipeline.batch.concurrency)
    pipeline, source, store, total = prepare(
        pipeline,
        items,
        out=out,
        model=model,
        check_input=check_input,
        providers=providers,
        resume=resume,
        force=force,
    )
    if resume and run_id is None and store is not None:
        run_id = latest_run_id(store)  # a resume goes on with the run: one run, one more session
    budget = None
    if max_cost is not None or max_tokens is not None:
        budget = Budget(max_cost=max_cost, max_tokens=max_tokens)
    adaptive = None
    if concurrency == "auto":
        adaptive = AdaptiveConcurrency(cap=max_concurrency)
        concurrency = max_concurrency
    runner = Runner(
        pipeline,
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        adaptive=adaptive,
        retry=RetryPolicy(max_attempts=max_attempts),
        retry_passes=retry_passes,
        store=store,
        clock=clock,
        providers=providers,
        run_id=run_id,
        reuse=resume,
        cache=open_cache(cache),
        budget=budget,
        settings=settings,
        backend=engine,
        limit_group=LimitGroup(limit_group) if limit_group else None,
    )
    runner.total = total
    attach_batcher(runner)
    if on_start is not None:
        on_start(runner)
    report = await runner.run(source)
    finish_output(
        runner,
        report,
        out,
        item_files=item_files,
        on_output=on_output,
        progress=output_progress,
        parquet=parquet,
    )
    return report


def finish_output(
    runner: Runner,
    report: RunReport,
    out: str | os.PathLike[str] | None,
    *,
    item_files: ItemFiles = "auto",
    on_output: Callable[[], None] | None = None,
    progress: Progress | None = None,
    parquet: bool = False,
) -> None:
    """Keep the report in the store (for ``chainfleet report``) and write the output folder
    (see :func:`chainfleet.report.output.write_output`); ``on_output`` is called first."""
    runner.store.end_run(runner.run_id, status=runner.status, summary=report.to_dict())
    if on_output is not None:
        on_output()
    if out is not None:
        from chainfleet.report.output import write_output

        write_output(Path(out), report, item_files=item_files, progress=progress, parquet=parquet)


def run(pipeline: Pipeline, items: Items, **kwargs: Any) -> RunReport:
    """Blocking :func:`arun`, for scripts and notebooks without an event loop of their own."""
    return asyncio.run(arun(pipeline, items, **kwargs))
