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

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chainfleet.chain.agent import AgentLoop
from chainfleet.chain.calls import Called, Calls, Prepared
from chainfleet.chain.progress import Chain, GateOutcome
from chainfleet.chain.review import with_feedback
from chainfleet.chain.usercode import CheckError, call_user
from chainfleet.errors import CallError, FatalError, InvalidOutput
from chainfleet.pipeline import Stage
from chainfleet.pipeline.contracts import Contract, schema_instructions
from chainfleet.pipeline.gates import (
    JUDGE_SCHEMA,
    CallableCheck,
    CheckResult,
    JudgeCheck,
    as_text,
    feedback_of,
)
from chainfleet.providers import CompletionRequest
from chainfleet.store.runstore import RevisionRow, StageHit
from chainfleet.store.stats import StageStats

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext

#: what one attempt gives back: (text, input tokens, output tokens)
Call = tuple[str, int, int]
_JUDGE = Contract(JUDGE_SCHEMA)


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


def gate_message(results: list[CheckResult]) -> str:
    """The failure of an item at a gate: each failed check and its reason."""
    failed = [r for r in results if not r.passed]
    return "; ".join(
        f"quality gate: {r.reason}" if r.name == "gate" else f"quality gate {r.name!r}: {r.reason}"
        for r in failed
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
    """Runs single stages for the chains of one run, given its :class:`~chainfleet.chain.context.RunContext`.

    :meth:`run` is one stage for one item, start to finish: :meth:`produce` an output (render,
    call with retries, repair it against the stage's contract, store it), then the gate; a
    failed gate revises (produce again with the feedback), accepts or fails, as the stage says.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        #: makes the calls: limiter, retries, the calls table, prices
        self.calls = Calls(ctx)
        #: runs agent stages (tools:), turn after turn, each turn one of these calls
        self.agents = AgentLoop(ctx, self.calls)
        stages = list(ctx.pipeline.stages)
        #: stages whose every try is stored (contracts, gates, and stages a revision re-runs)
        self._tracked = {s.name for s in stages if s.contract is not None or s.checks}
        for index, stage in enumerate(stages):
            if stage.failure_action == "revise":
                start = next(i for i, s in enumerate(stages) if s.name == stage.revise_from)
                self._tracked.update(s.name for s in stages[start:index])

    async def advance(self, chain: Chain) -> None:
        """Run the chain's remaining stages; record the first failure on the chain (a fatal
        one on the run too), where it waits for a person, or the stage boundary where an
        interrupted run stopped it. Never raises a ``CallError``."""
        stages = self.ctx.pipeline.stages
        while chain.next_stage < len(stages):
            stage = stages[chain.next_stage]
            if self.ctx.state.interrupted:  # Ctrl-C: the stage in flight finished; start no other
                chain.stopped_at = stage.name
                return
            at = self.ctx.stats.stage(stage.name)  # the chain is at this stage: calling, judged,
            at.in_flight += 1  # revised or kept (the live panel's per-stage "in flight")
            tracer = self.ctx.tracer
            if tracer.on:
                tracer.stage_started(
                    chain, stage.name, "agent" if stage.is_agent else "tool" if stage.is_tool else "llm"
                )
            try:
                await self.run(chain, stage)
            except CallError as exc:
                if tracer.on:
                    tracer.stage_ended(chain, stage.name, exc)
                exc.item_id, exc.stage = chain.item.id, stage.name
                chain.error, chain.error_stage = exc, stage.name
                if isinstance(exc, FatalError):
                    self.ctx.state.fail(exc)
                return
            finally:
                at.in_flight -= 1
            if tracer.on:
                tracer.stage_ended(chain, stage.name)  # (after a failure: already ended)
            if await self.ctx.review.park(chain, stage):  # waits for a person (review:)
                chain.parked = stage.name
                return
            chain.next_stage += 1

    async def run(self, chain: Chain, stage: Stage) -> None:
        """Get one stage's result for one item, gated. Raises the ``CallError`` that fails it.

        A stage a reviewer sent this item back to starts with the reviewer's note as its
        ``feedback`` (and the rejected output as ``previous``)."""
        sent_back = await self.ctx.review.context(chain, stage)
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
                self.ctx.stats.revisions += 1
                await self._revise_earlier(chain, stage, revision, feedback)
                continue
            outcome.outcome = {"pass": "passed", "accept": "accepted"}.get(action, "failed")
            await self._settle(chain, stage, tried, results, outcome.outcome)
            if action == "fail":
                if self.ctx.review.gate_failed(chain, stage, gate_message(results)):
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
        names = [s.name for s in self.ctx.pipeline.stages]
        start, end = names.index(stage.revise_from), names.index(stage.name)
        for earlier in self.ctx.pipeline.stages[start:end]:
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
            elif isinstance(check, CallableCheck):  # the user's code: what it raises fails this item
                what = f"gate check {check.name!r}"
                reason = await call_user(
                    check.function, tried.value, stage=stage.name, what=what, error=CheckError
                )
                results.append(check.verdict(reason))
            else:
                results.append(check.result(tried.value, context))
        await self._settle(chain, stage, tried, results, None)
        return results

    async def _settle(
        self, chain: Chain, stage: Stage, tried: Try, results: list[CheckResult], outcome: str | None
    ) -> None:
        """Store a try's gate results (and on the last try the stage's outcome), durably."""
        dicts = [r.to_dict() for r in results]
        store = self.ctx.store
        store.set_gates(self.ctx.run_id, chain.item.index, stage.name, tried.revision, dicts, outcome)
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
            prepared = self.calls.tool_call(stage, context)
        else:
            context["feedback"] = feedback
            context["previous"] = "" if previous is None else as_text(previous)
            prepared = self._llm_call(stage, context, revision)
        found = await self._reused(chain, stage, prepared, revision, feedback)
        if found is not None:
            return found
        stats = self.ctx.stats.stage(stage.name)
        if stage.is_agent:
            called = await self.agents.run(chain, stage, prepared, stats)
        else:
            called = await self.calls.attempts(chain, stage.name, prepared, stats)
        contract, limit = stage.contract, stage.max_repairs
        value, repairs = await self._repair(chain, stage.name, contract, limit, prepared, called, stats)
        hit = StageHit(called.text, called.input_tokens, called.output_tokens)
        if prepared.cacheable and self.ctx.cache is not None:
            self.ctx.cache.cache_put(prepared.key, hit)
        track = stage.name in self._tracked
        key = prepared.key if self.ctx.store.persistent or track else None
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
        ctx, hit, row = self.ctx, None, None
        if stage.name in self._tracked:
            scope = None if ctx.reuse else ctx.run_id
            row = await self.ctx.reads.revision(chain.item.id, stage.name, prepared.key, scope)
            if row is not None:
                hit = StageHit(row.output, row.input_tokens, row.output_tokens)
        if hit is None and ctx.reuse:
            hit = await self.ctx.reads.stage(chain.item.id, stage.name, prepared.key)
        source = "store"
        if hit is not None:
            ctx.stats.reused += 1
        elif prepared.cacheable and ctx.cache is not None:
            hit, source = await self.ctx.reads.cached(prepared.key), "cache"
            if hit is not None:
                ctx.stats.cache_hits += 1
        if hit is None:
            return None
        if ctx.tracer.on:
            spec = None if stage.is_tool else self.ctx.pipeline.model_for(stage)
            ctx.tracer.reused(chain, stage.name, spec, source)
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
            self.ctx.stats.repairs += 1
            prepared = prepared.repair(problem, called.text)
            more = await self.calls.attempts(chain, label, prepared, stats)
            called.add(more)
            value, problem = contract.check(more.text)
        called.text = json.dumps(value, ensure_ascii=False)
        return value, repairs

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
        store, run_id = self.ctx.store, self.ctx.run_id
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
        pipeline = self.ctx.pipeline
        spec = check.model or (pipeline.model if stage.is_tool else pipeline.model_for(stage))
        _, model = self.ctx.pool.for_model(spec)
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
        prepared = self.calls.prepare(spec, request, ("judge", spec, prompt, check.max_tokens))
        label = f"{stage.name}:judge"
        stats = self.ctx.stats.stage(label)
        self.ctx.stats.judge_calls += 1
        hit = await self.ctx.reads.cached(prepared.key) if prepared.cacheable and self.ctx.cache else None
        if hit is not None:
            self.ctx.stats.cache_hits += 1
            called = Called(hit.output, hit.input_tokens, hit.output_tokens, 0.0, 0)
        else:
            called = await self.calls.attempts(chain, label, prepared, stats)
        value, _ = await self._repair(chain, label, _JUDGE, 2, prepared, called, stats)
        if hit is None and prepared.cacheable and self.ctx.cache is not None:
            verdict = StageHit(called.text, called.input_tokens, called.output_tokens)
            self.ctx.cache.cache_put(prepared.key, verdict)
        return check.verdict(value)

    def _llm_call(self, stage: Stage, context: Mapping[str, Any], revision: int) -> Prepared:
        """One LLM stage made ready: its request (with its schema), its key, its repairs."""
        spec = self.ctx.pipeline.model_for(stage)
        _, model = self.ctx.pool.for_model(spec)
        system, prompt = stage.render(context)
        if revision and not stage.uses_feedback:
            prompt += revision_note(context["feedback"], context["previous"])
        elif context.get("feedback"):  # sent back by a reviewer: the note reaches the model
            prompt = with_feedback(prompt, stage, context["feedback"])
        contract = stage.contract
        structured = self.ctx.pipeline.structured_setting(spec)
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
        batch = self.ctx.batch_calls(stage, str(context["id"]))
        prepared = self.calls.prepare(spec, request, key_parts, batch)
        if stage.is_agent:  # its answer depends on what its tools return now: never from the cache
            prepared.cacheable = False
        return prepared
