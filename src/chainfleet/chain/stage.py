"""One stage for one item: render, call (with retries), repair, gate, revise, store.

The runner decides which item runs and when (admission, passes, stopping); a
:class:`StageExecutor` gets one stage's result for one item: from the store on resume, from the
response cache, or by calling the model through its limiter with the retry policy. A reply that
breaks the stage's contract is asked again with the validator's message (a repair); an output
that fails the stage's gate is revised, accepted or failed, as the stage says. Every try of a
gated or contracted stage is stored with its gate results, so a resumed run continues a revision
loop where it stopped. The result is durable in the run store before the stage counts as done.

How one gated stage goes::

    produce (render -> call -> repair) -> gate -> passed: done
                                            \\-> failed: revise (produce again, told the
                                                 feedback) | accept (flagged) | fail the item
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chainfleet.chain.review import with_feedback
from chainfleet.errors import CallError, InvalidOutput, PermanentError, RetryableError
from chainfleet.inputs.source import Item
from chainfleet.limits.headers import parse_rate_limits
from chainfleet.limits.limiter import ModelLimiter, Reservation
from chainfleet.limits.tokens import estimate_tokens
from chainfleet.pipeline.contracts import Contract, schema_instructions
from chainfleet.pipeline.gates import JUDGE_SCHEMA, CheckResult, JudgeCheck, as_text, feedback_of
from chainfleet.pipeline.spec import Stage
from chainfleet.providers import CompletionRequest
from chainfleet.providers.prices import price_for
from chainfleet.store.runstore import CallRow, RevisionRow, StageHit
from chainfleet.store.stats import StageStats

if TYPE_CHECKING:
    from chainfleet.chain.batch import BatchCalls
    from chainfleet.runner.core import Runner

#: what one attempt gives back: (text, input tokens, output tokens)
Call = tuple[str, int, int]
_JUDGE = Contract(JUDGE_SCHEMA)


class ToolError(PermanentError):
    """A tool step raised something other than a chainfleet error."""

    kind = "tool_error"


@dataclass
class GateOutcome:
    """How one item fared at one gated stage: each try's check results, and the end."""

    stage: str
    #: passed, accepted (kept though it failed: flagged) or failed; None while in progress
    outcome: str | None = None
    tries: list[list[CheckResult]] = field(default_factory=list)

    def add(self, results: list[CheckResult]) -> None:
        self.tries.append(results)

    @property
    def passed(self) -> bool:
        return bool(self.tries) and all(r.passed for r in self.tries[-1])

    @property
    def revisions(self) -> int:
        return max(0, len(self.tries) - 1)


@dataclass
class Chain:
    """One item's progress through the pipeline."""

    item: Item
    #: each finished stage's output: text, or a structured output's value
    outputs: dict[str, Any] = field(default_factory=dict)
    next_stage: int = 0
    attempts: int = 0
    seconds: float = 0.0
    error: CallError | None = None
    error_stage: str | None = None
    #: per gated stage, its tries' gate results and outcome
    gates: dict[str, GateOutcome] = field(default_factory=dict)
    #: the stage where the item waits for a person (``review:``), if it does
    parked: str | None = None
    #: outputs a gate refused that wait for review instead (stage -> reason)
    gate_failures: dict[str, str] = field(default_factory=dict)


@dataclass
class Attempt:
    """One attempt's timing: queued (asked), started (the provider call began), waits."""

    number: int
    queued: float
    started: float
    limiter_wait: float = 0.0
    cooldown_wait: float = 0.0


@dataclass
class Called:
    """A call's text after its attempts, with the tokens and service time they took."""

    text: str
    input_tokens: int
    output_tokens: int
    seconds: float
    attempts: int

    def add(self, more: Called) -> None:
        self.text = more.text
        self.input_tokens += more.input_tokens
        self.output_tokens += more.output_tokens
        self.seconds += more.seconds
        self.attempts += more.attempts


@dataclass
class Try:
    """One output of a stage for one item (a revision is another try)."""

    value: Any
    text: str
    revision: int = 0
    gates: list[dict[str, Any]] | None = None
    repairs: int = 0
    feedback: str = ""

    def row(
        self, chain: Chain, stage: str, key: str | None, hit: StageHit, structured: bool, outcome: str | None
    ) -> RevisionRow:
        return RevisionRow(
            index=chain.item.index,
            item_id=chain.item.id,
            stage=stage,
            revision=self.revision,
            key=key,
            output=hit.output,
            is_json=structured,
            input_tokens=hit.input_tokens,
            output_tokens=hit.output_tokens,
            repairs=self.repairs,
            feedback=self.feedback,
            gates=self.gates,
            outcome=outcome,
        )


@dataclass
class Prepared:
    """A call made ready for one item: how to attempt it, how to ask again to repair it, and
    (made on demand: it costs a hash of the whole prompt) the key of its input."""

    call: Callable[[Attempt], Awaitable[Call]]
    key_parts: tuple[Any, ...]
    spec: str | None = None
    gated: bool = False
    cacheable: bool = False
    #: the same call with the validator's message appended (None: cannot be asked again)
    repair: Callable[[str, str], Prepared] | None = None
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


def gate_message(results: list[CheckResult]) -> str:
    """The failure of an item at a gate: each failed check and its reason."""
    failed = [r for r in results if not r.passed]
    return "; ".join(
        f"quality gate: {r.reason}" if r.name == "gate" else f"quality gate {r.name!r}: {r.reason}"
        for r in failed
    )


def repair_note(problem: str, reply: str) -> str:
    """What a repair call adds to the prompt: the reply and what was wrong with it."""
    return (
        f"\n\nYour previous reply was not valid: {problem}.\nPrevious reply:\n{reply[:2000]}\n"
        "Reply again with only the corrected JSON value."
    )


def with_schema(prompt: str, schema: Mapping[str, Any], structured: str) -> str:
    """The prompt, with the schema appended where the provider is not asked for it natively
    (``structured: prompt``, and ``json_object``, whose JSON mode knows no schema)."""
    return prompt + schema_instructions(schema) if structured in ("prompt", "json_object") else prompt


def revision_note(feedback: str, previous: str) -> str:
    """What a revision adds to a prompt that does not use ``{{ feedback }}`` itself."""
    return (
        f"\n\nA previous answer did not pass review:\n{feedback}\n\nPrevious answer:\n{previous}\n\n"
        "Write it again, fixing every point above."
    )


class StageExecutor:
    """Runs single stages for the chains of one :class:`~chainfleet.runner.core.Runner`.

    :meth:`run` is one stage for one item, start to finish: :meth:`produce` an output (render,
    call with retries, repair it against the stage's contract, store it), then the gate; a
    failed gate revises (produce again with the feedback), accepts or fails, as the stage says.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        stages = list(runner.pipeline.stages)
        #: stages whose every try is stored (contracts, gates, and stages a revision re-runs)
        self._tracked = {s.name for s in stages if s.contract is not None or s.checks}
        for index, stage in enumerate(stages):
            if stage.failure_action == "revise":
                start = next(i for i, s in enumerate(stages) if s.name == stage.revise_from)
                self._tracked.update(s.name for s in stages[start:index])

    async def run(self, chain: Chain, stage: Stage) -> None:
        """Get one stage's result for one item, gated. Raises the ``CallError`` that fails it.

        A stage a reviewer sent this item back to starts with the reviewer's note as its
        ``feedback`` (and the rejected output as ``previous``)."""
        sent_back = await self.runner.review.context(chain, stage)
        feedback, previous = sent_back.get("feedback", ""), sent_back.get("previous") or None
        if not stage.checks:
            await self.produce(chain, stage, feedback=feedback, previous=previous)
            return
        revision = 0
        outcome = chain.gates[stage.name] = GateOutcome(stage.name)
        while True:
            tried = await self.produce(chain, stage, revision=revision, feedback=feedback, previous=previous)
            results = await self._gate_results(chain, stage, tried)
            outcome.add(results)
            action = "pass" if outcome.passed else self.after_failure(stage, revision)
            if action == "revise":
                feedback, previous, revision = feedback_of(results), tried.value, revision + 1
                self.runner.stats.revisions += 1
                await self._revise_earlier(chain, stage, revision, feedback)
                continue
            outcome.outcome = {"pass": "passed", "accept": "accepted"}.get(action, "failed")
            await self._settle(chain, stage, tried, results, outcome.outcome)
            if action == "fail":
                if self.runner.review.gate_failed(chain, stage, gate_message(results)):
                    return  # review: on_gate_fail: a person decides instead
                raise InvalidOutput(gate_message(results), stage=stage.name)
            return

    def after_failure(self, stage: Stage, revision: int) -> str:
        """What a failed gate does now: revise, accept or fail (``then`` after the last revision)."""
        action = stage.failure_action
        if action != "revise":
            return action
        return "revise" if revision < stage.max_revisions else stage.then

    async def _revise_earlier(self, chain: Chain, stage: Stage, revision: int, feedback: str) -> None:
        """With ``revise: EARLIER``, run the stages from EARLIER up to this one again, each told
        the feedback and shown its own previous output (their own gates are not run again)."""
        if stage.revise_from == stage.name:
            return
        names = [s.name for s in self.runner.pipeline.stages]
        start, end = names.index(stage.revise_from), names.index(stage.name)
        for earlier in self.runner.pipeline.stages[start:end]:
            previous = chain.outputs.get(earlier.name)
            await self.produce(chain, earlier, revision=revision, feedback=feedback, previous=previous)

    async def _gate_results(self, chain: Chain, stage: Stage, tried: Try) -> list[CheckResult]:
        """Every check's result on one try (stored ones on resume: a judge is not asked twice)."""
        if tried.gates is not None:
            return [CheckResult.from_dict(g) for g in tried.gates]
        context = self._context(chain)
        results = []
        for check in stage.checks:
            if isinstance(check, JudgeCheck):
                results.append(await self._judge(chain, stage, check, tried.value, context))
            else:
                results.append(check.result(tried.value, context))
        await self._settle(chain, stage, tried, results, None)
        return results

    async def _settle(
        self, chain: Chain, stage: Stage, tried: Try, results: list[CheckResult], outcome: str | None
    ) -> None:
        """Store a try's gate results (and on the last try the stage's outcome), durably."""
        dicts = [r.to_dict() for r in results]
        store = self.runner.store
        store.set_gates(self.runner.run_id, chain.item.index, stage.name, tried.revision, dicts, outcome)
        await store.durable()

    # -- one output ---------------------------------------------------------------------------------

    async def produce(
        self,
        chain: Chain,
        stage: Stage,
        *,
        revision: int = 0,
        feedback: str = "",
        previous: Any = None,
    ) -> Try:
        """One output of ``stage`` for the item: reused (store, cache) or called, repaired
        against the contract, and durable in the store before it is returned."""
        context = self._context(chain)
        if stage.is_tool:
            if feedback:  # sent back by a reviewer: the tool sees the note (and its key changes)
                context |= {"feedback": feedback, "previous": "" if previous is None else as_text(previous)}
            prepared = self._tool_call(stage, context)
        else:
            context["feedback"] = feedback
            context["previous"] = "" if previous is None else as_text(previous)
            prepared = self._llm_call(stage, context, revision)
        found = await self._reused(chain, stage, prepared, revision, feedback)
        if found is not None:
            return found
        stats = self.runner.stats.stage(stage.name)
        stats.in_flight += 1
        try:
            called = await self._attempts(chain, stage.name, prepared, stats)
            contract, limit = stage.contract, stage.max_repairs
            value, repairs = await self._repair(chain, stage.name, contract, limit, prepared, called, stats)
        finally:
            stats.in_flight -= 1
        hit = StageHit(called.text, called.input_tokens, called.output_tokens)
        if prepared.cacheable and self.runner.cache is not None:
            self.runner.cache.cache_put(prepared.key, hit)
        track = stage.name in self._tracked
        key = prepared.key if self.runner.store.persistent or track else None
        tried = Try(value, called.text, revision, repairs=repairs, feedback=feedback)
        await self._keep(chain, stage, key, hit, called.seconds, called.attempts, tried)
        return tried

    def _context(self, chain: Chain) -> dict[str, Any]:
        return {"id": chain.item.id, **chain.item.fields, **chain.outputs}

    async def _reused(
        self, chain: Chain, stage: Stage, prepared: Prepared, revision: int, feedback: str
    ) -> Try | None:
        """The output (and gate results) from the store or the response cache, if there: a try
        of this run (a retry pass) or, on resume, of an earlier run here."""
        runner, hit, row = self.runner, None, None
        if stage.name in self._tracked:
            scope = None if runner.reuse else runner.run_id
            row = await self.stored_try(chain.item.id, stage.name, prepared.key, scope)
            if row is not None:
                hit = StageHit(row.output, row.input_tokens, row.output_tokens)
        if hit is None and runner.reuse:
            hit = await self.stored(chain.item.id, stage.name, prepared.key)
        if hit is not None:
            runner.stats.reused += 1
        elif prepared.cacheable and runner.cache is not None:
            hit = await self.cached(prepared.key)
            if hit is not None:
                runner.stats.cache_hits += 1
        if hit is None:
            return None
        value = self._decode(stage, hit.output)
        gates = row.gates if row is not None else None
        repairs = row.repairs if row is not None else 0
        tried = Try(value, hit.output, revision, gates=gates, repairs=repairs, feedback=feedback)
        outcome = row.outcome if row else None
        await self._keep(chain, stage, prepared.key, hit, 0.0, 0, tried, outcome=outcome, reused=True)
        return tried

    @staticmethod
    def _decode(stage: Stage, text: str) -> Any:
        if stage.contract is None:
            return text
        value, problem = stage.contract.check(text)
        return text if problem else value

    async def _repair(
        self,
        chain: Chain,
        label: str,
        contract: Contract | None,
        max_repairs: int,
        prepared: Prepared,
        called: Called,
        stats: StageStats,
    ) -> tuple[Any, int]:
        """Parse and validate against ``contract``; ask again with the validator's message up
        to ``max_repairs`` times. Returns (value, repairs); raises ``InvalidOutput`` after."""
        if contract is None:
            return called.text, 0
        value, problem = contract.check(called.text)
        repairs = 0
        while problem is not None:
            if repairs >= max_repairs or prepared.repair is None:
                tries = f" after {repairs} repair{'' if repairs == 1 else 's'}" if repairs else ""
                raise InvalidOutput(f"output does not match the schema{tries}: {problem}", stage=label)
            repairs += 1
            self.runner.stats.repairs += 1
            prepared = prepared.repair(problem, called.text)
            more = await self._attempts(chain, label, prepared, stats)
            called.add(more)
            value, problem = contract.check(more.text)
        called.text = json.dumps(value, ensure_ascii=False)
        return value, repairs

    async def _attempts(self, chain: Chain, label: str, prepared: Prepared, stats: StageStats) -> Called:
        """Attempt one call until it succeeds or the retry policy gives up (then raise)."""
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
                self._save_call(chain, label, record, exc.kind, backoff=wait, error=str(exc))
                if not retrying:
                    raise
                self.runner.stats.calls_retried += 1
                if wait:
                    self.runner.stats.backoff_seconds += wait
                    await self.runner.clock.sleep(wait)
                continue
            service += self._count_attempt(chain, stats, record, ok=True)
            self._save_call(chain, label, record, "ok", tokens=(tokens_in, tokens_out))
            self._spend(prepared.spec, tokens_in, tokens_out)
            return Called(text, tokens_in, tokens_out, service, attempt)

    async def stored(self, item_id: str, stage: str, key: str) -> StageHit | None:
        """A result of ``stage`` for this input already in the store (a Ray worker asks the
        driver's store instead)."""
        return self.runner.store.find_stage(item_id, stage, key)

    async def stored_try(self, item_id: str, stage: str, key: str, run_id: str | None) -> RevisionRow | None:
        """A try of a tracked stage made from this input (in run ``run_id``, or any run)."""
        return self.runner.store.find_revision(item_id, stage, key, run_id=run_id)

    async def cached(self, key: str) -> StageHit | None:
        """A cached response for this request, if any (a Ray worker asks the driver)."""
        return self.runner.cache.cache_get(key) if self.runner.cache is not None else None

    async def _keep(
        self,
        chain: Chain,
        stage: Stage,
        key: str | None,
        hit: StageHit,
        seconds: float,
        attempts: int,
        tried: Try,
        outcome: str | None = None,
        reused: bool = False,
    ) -> None:
        """Record a stage result (and, for a tracked stage, the try); it is committed (a group
        commit) before the chain goes on. A ``reused`` result keeps the attempts and seconds
        the session that called it recorded."""
        store, run_id = self.runner.store, self.runner.run_id
        structured = stage.contract is not None and not isinstance(tried.value, str)
        store.save_stage(
            run_id,
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
            is_json=structured,
            reused=reused,
        )
        if stage.name in self._tracked:
            store.save_revision(run_id, tried.row(chain, stage.name, key, hit, structured, outcome))
        await store.durable()
        chain.outputs[stage.name] = tried.value

    # -- the judge ------------------------------------------------------------------------------------

    async def _judge(
        self, chain: Chain, stage: Stage, check: JudgeCheck, output: Any, context: Mapping[str, Any]
    ) -> CheckResult:
        """Ask the judge's model for ``{score, feedback}``: a call like any other (limiter,
        retries, budget, cache), counted under ``STAGE:judge``."""
        pipeline = self.runner.pipeline
        spec = check.model or (pipeline.model if stage.is_tool else pipeline.model_for(stage))
        _, model = self.runner.pool.for_model(spec)
        prompt = check.prompt(output, context)
        structured = pipeline.structured_setting(spec)
        request = CompletionRequest(
            model=model,
            prompt=with_schema(prompt, JUDGE_SCHEMA, structured),
            max_tokens=check.max_tokens,
            temperature=0.0,
            schema=JUDGE_SCHEMA,
            structured=structured,
            schema_name="verdict",
        )
        prepared = self._prepare(spec, request, ("judge", spec, prompt, check.max_tokens))
        label = f"{stage.name}:judge"
        stats = self.runner.stats.stage(label)
        self.runner.stats.judge_calls += 1
        hit = await self.cached(prepared.key) if prepared.cacheable and self.runner.cache else None
        if hit is not None:
            self.runner.stats.cache_hits += 1
            called = Called(hit.output, hit.input_tokens, hit.output_tokens, 0.0, 0)
        else:
            called = await self._attempts(chain, label, prepared, stats)
        value, _ = await self._repair(chain, label, _JUDGE, 2, prepared, called, stats)
        if hit is None and prepared.cacheable and self.runner.cache is not None:
            verdict = StageHit(called.text, called.input_tokens, called.output_tokens)
            self.runner.cache.cache_put(prepared.key, verdict)
        return check.verdict(value)

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
        label: str,
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
                stage=label,
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

    def _llm_call(self, stage: Stage, context: Mapping[str, Any], revision: int) -> Prepared:
        """One LLM stage made ready: its request (with its schema), its key, its repairs."""
        spec = self.runner.pipeline.model_for(stage)
        _, model = self.runner.pool.for_model(spec)
        system, prompt = stage.render(context)
        if revision and not stage.uses_feedback:
            prompt += revision_note(context["feedback"], context["previous"])
        elif context.get("feedback"):  # sent back by a reviewer: the note reaches the model
            prompt = with_feedback(prompt, stage, context["feedback"])
        contract = stage.contract
        structured = self.runner.pipeline.structured_setting(spec)
        if contract is not None:
            prompt = with_schema(prompt, contract.schema, structured)
        request = CompletionRequest(
            model=model,
            prompt=prompt,
            system=system,
            max_tokens=stage.max_tokens,
            temperature=stage.temperature,
            schema=contract.schema if contract is not None else None,
            structured=structured,
            schema_name=stage.name,
        )
        key_parts: tuple[Any, ...] = (stage.name, spec, system, prompt, stage.max_tokens, stage.temperature)
        if contract is not None:
            key_parts += (json.dumps(contract.schema, sort_keys=True), request.structured)
        if revision:
            key_parts += (("revision", revision),)
        return self._prepare(spec, request, key_parts, self.runner.batch_calls(stage, str(context["id"])))

    def _prepare(
        self,
        spec: str,
        request: CompletionRequest,
        key_parts: tuple[Any, ...],
        batch: BatchCalls | None = None,
    ) -> Prepared:
        """A request made ready: an attempt goes through the model's limiter and the adaptive
        gate; a 429 closes the model's cooldown gate. In batch mode (``batch``, see
        chainfleet.chain.batch) it goes into a provider batch job instead: no limiter (a batch API
        has limits of its own), and the batch price."""
        provider, model = self.runner.pool.for_model(spec)
        caller = batch(key_parts) if batch is not None else None
        limiter = self._limiter(spec) if caller is None else None
        estimate = estimate_tokens((request.system or "") + request.prompt, model) + request.max_tokens

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
                completion = await (provider.complete(request) if caller is None else caller(request))
            except CallError as exc:
                if self.runner.adaptive is not None:
                    busy = exc.kind in ("rate_limited", "overloaded")
                    await self.runner.adaptive.observe(ok=False, overloaded=busy, latency=None)
                if limiter is not None and reservation is not None:
                    self._refused_or_failed(limiter, reservation, exc, record.number)
                raise
            except BaseException:  # cancelled: a slow-start probe must not hold the others
                if limiter is not None and reservation is not None:
                    limiter.failed(reservation)
                raise
            if self.runner.adaptive is not None:
                latency = self.runner.clock.now() - started
                await self.runner.adaptive.observe(ok=True, overloaded=False, latency=latency)
            if limiter is not None and reservation is not None:
                limiter.observe(parse_rate_limits(completion.headers, time.time()))
                limiter.settle(reservation, completion.input_tokens + completion.output_tokens)
            self.runner.stats.cached_tokens += completion.cached_tokens
            return completion.text, completion.input_tokens, completion.output_tokens

        def repair(problem: str, reply: str) -> Prepared:
            again = dataclasses.replace(request, prompt=request.prompt + repair_note(problem, reply))
            return self._prepare(spec, again, (*key_parts, ("repair", problem)), batch)

        # the response cache: real providers only (sim must take its time), deterministic requests
        cacheable = provider.kind != "sim" and request.temperature == 0
        return Prepared(
            call=call,
            key_parts=key_parts,
            spec=spec if caller is None else f"{spec}@batch",
            gated=limiter is not None,
            cacheable=cacheable,
            repair=repair if request.schema is not None else None,
        )

    def _refused_or_failed(
        self, limiter: ModelLimiter, reservation: Reservation, exc: CallError, attempt: int
    ) -> None:
        """A 429 closes the model's cooldown gate (and gives its tokens back); anything else
        only frees the call's place (a slow-start probe lets the others go)."""
        if exc.kind != "rate_limited":
            limiter.failed(reservation)
            return
        wait = exc.retry_after if isinstance(exc, RetryableError) else None
        if wait is None:
            wait = self.runner.retry.backoff(attempt, self.runner.rng)
        limiter.refused(reservation, wait)

    def _limiter(self, spec: str) -> ModelLimiter | None:
        """The one limiter of model ``spec``, shared by every stage using it (None: unmetered)."""
        if spec in self.runner.limiters:
            return self.runner.limiters[spec]
        rpm, tpm, metered = limits_of(self.runner, spec)
        limiter = None
        if metered:
            limiter = ModelLimiter(
                rpm=rpm,
                tpm=tpm,
                clock=self.runner.clock,
                rng=self.runner.rng,
                group=(self.runner.limit_group, spec) if self.runner.limit_group else None,
            )
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


def limits_of(runner: Runner, spec: str) -> tuple[float | None, float | None, bool]:
    """Model ``spec``'s told limits (``--rpm/--tpm``, else the pipeline's ``limits:``) and
    whether it gets a limiter at all: real providers always do (it learns their limits from
    headers and holds the cooldown gate), ``sim`` only when told a limit."""
    configured = runner.pipeline.limits.get(spec)
    rpm = runner.rpm if runner.rpm is not None else (configured.rpm if configured else None)
    tpm = runner.tpm if runner.tpm is not None else (configured.tpm if configured else None)
    return rpm, tpm, rpm is not None or tpm is not None or not spec.startswith("sim")
