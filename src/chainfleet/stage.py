"""One stage for one item: render, call (with retries), check, store.

The runner decides which item runs and when (admission, passes, stopping); a
:class:`StageExecutor` gets one stage's result for one item: from the store on resume, from the
response cache, or by calling the model through its limiter with the retry policy. The result is
durable in the run store before the stage counts as done.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import CallError, PermanentError, RetryableError
from .headers import parse_rate_limits
from .inputs import Item
from .limits import ModelLimiter, estimate_tokens
from .pipeline import Stage
from .prices import price_for
from .providers import CompletionRequest
from .stats import StageStats
from .store import CallRow, StageHit

if TYPE_CHECKING:
    from .runner import Runner

#: what one attempt gives back: (text, input tokens, output tokens)
Call = tuple[str, int, int]


class ToolError(PermanentError):
    """A tool step raised something other than a chainfleet error."""

    kind = "tool_error"

@dataclass
class Chain:
    """One item's progress through the pipeline."""

    item: Item
    outputs: dict[str, str] = field(default_factory=dict)
    next_stage: int = 0
    attempts: int = 0
    seconds: float = 0.0
    error: CallError | None = None
    error_stage: str | None = None


@dataclass
class Attempt:
    """One attempt's timing: queued (asked), started (the provider call began), waits."""

    number: int
    queued: float
    started: float
    limiter_wait: float = 0.0
    cooldown_wait: float = 0.0


@dataclass
class Prepared:
    """A stage made ready for one item: how to attempt it and (made on demand: it costs a
    hash of the whole prompt) the key of its input."""

    call: Callable[[Attempt], Awaitable[Call]]
    key_parts: tuple[Any, ...]
    spec: str | None = None
    gated: bool = False
    cacheable: bool = False
    _key: str | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = _key(*self.key_parts)
        return self._key


def _key(*parts: object) -> str:
    """The key of a stage's input: same key, same request, same result to reuse."""
    data = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class StageExecutor:
    """Runs single stages for the chains of one :class:`~chainfleet.runner.Runner`."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner


    async def run(self, chain: Chain, stage: Stage) -> None:
        """Get one stage's result for one item: from the store (resume), the response cache, or
        by calling, with retries. The result is durable before the stage counts as done."""
        context: dict[str, Any] = {"id": chain.item.id, **chain.item.fields, **chain.outputs}
        prepared = self._tool_call(stage, context) if stage.is_tool else self._llm_call(stage, context)
        if await self._reused(chain, stage, prepared):
            return
        stats = self.runner.stats.stage(stage.name)
        stats.in_flight += 1
        try:
            await self._attempts(chain, stage, prepared, stats)
        finally:
            stats.in_flight -= 1

    async def _attempts(self, chain: Chain, stage: Stage, prepared: Prepared, stats: StageStats) -> None:
        """Attempt a stage until it succeeds or the retry policy gives up (then raise)."""
        attempt = 0
        service = 0.0
        while True:
            attempt += 1
            chain.attempts += 1
            self.runner.stats.calls += 1
            stats.calls += 1
            now = self.runner.clock.now()
            record = Attempt(number=attempt, queued=now, started=now)
            try:
                text, tokens_in, tokens_out = await prepared.call(record)
            except CallError as exc:
                service += self._count_attempt(chain, stats, record, ok=False)
                if exc.kind == "rate_limited":
                    self.runner.stats.rate_limited += 1
                retrying = self.runner.retry.should_retry(exc, attempt) and not self.runner.halted
                wait = 0.0
                if retrying and not (exc.kind == "rate_limited" and prepared.gated):
                    # (else the cooldown gate waits)
                    wait = self.runner.retry.wait(exc, attempt, self.runner.rng)
                self._save_call(chain, stage, record, exc.kind, backoff=wait, error=str(exc))
                if not retrying:
                    raise
                self.runner.stats.calls_retried += 1
                if wait:
                    self.runner.stats.backoff_seconds += wait
                    await self.runner.clock.sleep(wait)
                continue
            service += self._count_attempt(chain, stats, record, ok=True)
            self._save_call(chain, stage, record, "ok", tokens=(tokens_in, tokens_out))
            self._spend(prepared.spec, tokens_in, tokens_out)
            stage.check_output(text)
            if prepared.cacheable and self.runner.cache is not None:
                self.runner.cache.cache_put(prepared.key, StageHit(text, tokens_in, tokens_out))
            key = prepared.key if self.runner.store.persistent else None  # a temporary store is never resumed
            await self._keep(chain, stage, key, StageHit(text, tokens_in, tokens_out), service, attempt)
            return

    async def _reused(self, chain: Chain, stage: Stage, prepared: Prepared) -> bool:
        """Take the stage's result from the store (resume) or the response cache, if there."""
        hit = None
        if self.runner.reuse:
            hit = self.runner.store.find_stage(chain.item.id, stage.name, prepared.key)
            if hit is not None:
                self.runner.stats.reused += 1
        if hit is None and prepared.cacheable and self.runner.cache is not None:
            hit = self.runner.cache.cache_get(prepared.key)
            if hit is not None:
                self.runner.stats.cache_hits += 1
        if hit is None:
            return False
        stage.check_output(hit.output)
        await self._keep(chain, stage, prepared.key, hit, 0.0, 0)
        return True

    async def _keep(
        self, chain: Chain, stage: Stage, key: str | None, hit: StageHit, seconds: float, attempts: int
    ) -> None:
        """Record a stage result; it is committed (a group commit) before the chain goes on."""
        self.runner.store.save_stage(
            self.runner.run_id,
            chain.item.index,
            stage.name,
            hit.output,
            input_tokens=hit.input_tokens,
            output_tokens=hit.output_tokens,
            seconds=seconds,
            attempts=attempts,
            item_id=chain.item.id,
            key=key,
            durable=False,
        )
        await self.runner.store.durable()
        chain.outputs[stage.name] = hit.output

    def _spend(self, spec: str | None, tokens_in: int, tokens_out: int) -> None:
        self.runner.stats.input_tokens += tokens_in
        self.runner.stats.output_tokens += tokens_out
        if spec is None or self.runner.cost_usd is None:
            return
        if spec not in self.runner._price_of:  # one look-up per model, not per call
            self.runner._price_of[spec] = price_for(spec, self.runner.prices)
        price = self.runner._price_of[spec]
        cost = self.runner.cost_usd
        self.runner.cost_usd = None if price is None else cost + price.cost(tokens_in, tokens_out)

    def _save_call(
        self,
        chain: Chain,
        stage: Stage,
        record: Attempt,
        status: str,
        *,
        backoff: float = 0.0,
        tokens: tuple[int, int] = (0, 0),
        error: str | None = None,
    ) -> None:
        t0 = self.runner._t0
        self.runner.store.save_call(
            self.runner.run_id,
            CallRow(
                index=chain.item.index,
                item_id=chain.item.id,
                stage=stage.name,
                attempt=record.number,
                queued=record.queued - t0,
                started=record.started - t0,
                ended=self.runner.clock.now() - t0,
                status=status,
                limiter_wait=record.limiter_wait,
                cooldown_wait=record.cooldown_wait,
                backoff=backoff,
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                error=error,
            ),
        )

    def _llm_call(self, stage: Stage, context: Mapping[str, Any]) -> Prepared:
        """One LLM stage made ready: its request, its key, and an attempt that goes through the
        model's limiter and the adaptive gate; a 429 closes the model's cooldown gate."""
        spec = self.runner.pipeline.model_for(stage)
        provider, model = self.runner.pool.for_model(spec)
        system, prompt = stage.render(context)
        request = CompletionRequest(
            model=model,
            prompt=prompt,
            system=system,
            max_tokens=stage.max_tokens,
            temperature=stage.temperature,
        )
        limiter = self._limiter(spec)
        estimate = estimate_tokens((system or "") + prompt, model) + stage.max_tokens
        key_parts = (stage.name, spec, system, prompt, stage.max_tokens, stage.temperature)

        async def call(record: Attempt) -> Call:
            reservation = None
            if limiter is not None:
                reservation = await limiter.acquire(estimate)
                record.limiter_wait = reservation.limiter_wait
                record.cooldown_wait = reservation.cooldown_wait
                self.runner.stats.limiter_seconds += reservation.limiter_wait
                self.runner.stats.cooldown_seconds += reservation.cooldown_wait
            record.started = started = self.runner.clock.now()
            try:
                completion = await provider.complete(request)
            except CallError as exc:
                if self.runner.adaptive is not None:
                    busy = exc.kind in ("rate_limited", "overloaded")
                    await self.runner.adaptive.observe(ok=False, overloaded=busy, latency=None)
                if limiter is not None and reservation is not None and exc.kind == "rate_limited":
                    limiter.release(reservation)  # refused calls use none of the budget
                    wait = exc.retry_after if isinstance(exc, RetryableError) else None
                    if wait is None:
                        wait = self.runner.retry.backoff(record.number, self.runner.rng)
                    limiter.cooldown(wait)
                raise
            if self.runner.adaptive is not None:
                latency = self.runner.clock.now() - started
                await self.runner.adaptive.observe(ok=True, overloaded=False, latency=latency)
            if limiter is not None and reservation is not None:
                if completion.headers:
                    limiter.observe(parse_rate_limits(completion.headers, time.time()))
                limiter.settle(reservation, completion.input_tokens + completion.output_tokens)
            self.runner.stats.cached_tokens += completion.cached_tokens
            return completion.text, completion.input_tokens, completion.output_tokens

        # the response cache: real providers only (sim must take its time), deterministic requests
        cacheable = provider.kind != "sim" and stage.temperature == 0
        return Prepared(
            call=call, key_parts=key_parts, spec=spec, gated=limiter is not None, cacheable=cacheable
        )

    def _limiter(self, spec: str) -> ModelLimiter | None:
        """The one limiter of model ``spec``, shared by every stage using it (None: unmetered)."""
        if spec in self.runner.limiters:
            return self.runner.limiters[spec]
        configured = self.runner.pipeline.limits.get(spec)
        rpm = self.runner.rpm if self.runner.rpm is not None else (configured.rpm if configured else None)
        tpm = self.runner.tpm if self.runner.tpm is not None else (configured.tpm if configured else None)
        limiter = None
        if rpm is not None or tpm is not None or not spec.startswith("sim"):
            # real providers always get one: it learns their limits and holds the cooldown gate
            limiter = ModelLimiter(rpm=rpm, tpm=tpm, clock=self.runner.clock, rng=self.runner.rng)
        self.runner.limiters[spec] = limiter
        return limiter

    async def _tool(self, stage: Stage, context: Mapping[str, Any]) -> str:
        try:
            result = await stage.tool(context)
        except CallError:
            raise
        except Exception as exc:  # a tool's own bug or failure: the item fails, others go on
            raise ToolError(f"{type(exc).__name__}: {exc}", stage=stage.name) from exc
        if not isinstance(result, str):
            raise ToolError(f"tool returned {type(result).__name__}, not str", stage=stage.name)
        return result

    def _count_attempt(self, chain: Chain, stats: Any, record: Attempt, *, ok: bool) -> float:
        """Count one attempt; its service time runs from the call's start, after any wait for
        the limiter (so ``sequential_seconds`` is the calls' own time)."""
        elapsed = self.runner.clock.now() - record.started
        chain.seconds += elapsed
        stats.seconds.append(elapsed)
        self.runner.stats.service_seconds += elapsed
        if ok:
            self.runner.stats.calls_succeeded += 1
        else:
            self.runner.stats.calls_failed += 1
            stats.failed += 1
        return elapsed

    def _tool_call(self, stage: Stage, context: Mapping[str, Any]) -> Prepared:
        tool = stage.tool
        name = f"{getattr(tool, '__module__', '')}.{getattr(tool, '__qualname__', repr(tool))}"

        async def call(record: Attempt) -> Call:
            return await self._tool(stage, context), 0, 0

        return Prepared(call=call, key_parts=(stage.name, "tool", name, dict(context)))
