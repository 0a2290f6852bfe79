"""The runner's side of review: park an item at a stage that needs a person, and on resume
take each decision on (approved, edited: go on; rejected: back to a stage with the note).

The stage code calls three things, and nothing else of review:

- :meth:`ReviewHook.context` before a stage runs: ``feedback`` and ``previous`` when a reviewer
  sent the item back to this stage (empty strings otherwise);
- :meth:`ReviewHook.gate_failed` when a stage's gate refuses an output: with
  ``review: on_gate_fail`` the output waits for a person instead of failing the item;
- :meth:`ReviewHook.park` after a stage's result is kept: True when the item must wait.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chainfleet.pipeline.gates import as_text
from chainfleet.report.quality import assess
from chainfleet.store.review_queue import Entry, ReviewQueue

if TYPE_CHECKING:
    from chainfleet.chain.progress import Chain
    from chainfleet.pipeline import Pipeline, Stage
    from chainfleet.store.runstore import RunStore

__all__ = ["ReviewHook", "with_feedback"]

FEEDBACK_HEADER = "\n\nA reviewer sent the previous attempt back with this note:\n"


class ReviewHook:
    """Review for one run: queues outputs and applies decisions, on the run's own store.

    The queue is reached through four small async methods (:meth:`_feedback`, :meth:`_taken`,
    :meth:`_match`, :meth:`_enqueue`); a Ray worker's hook
    (:class:`~chainfleet.backends.ray_worker.RemoteReviewHook`) sends them to the driver,
    which keeps the one queue in run.db, so review works there as it does here."""

    def __init__(self, pipeline: Pipeline, store: RunStore, run_id: str) -> None:
        self.pipeline, self.store, self.run_id = pipeline, store, run_id
        db = getattr(store, "db", None)
        self.queue: ReviewQueue | None = ReviewQueue(db) if db is not None else None
        #: items parked in this run
        self.parked = 0
        #: whether to consult the queue at all: a stage has ``review:``, or the queue holds
        #: entries (decisions made under an earlier version of the pipeline still apply)
        self.enabled = any(stage.review is not None for stage in pipeline.stages) or (
            self.queue is not None and self.queue.has_entries()
        )

    # -- the queue: here, on the run's store ----------------------------------------------------

    async def _feedback(self, item_id: str, stage: str) -> tuple[int, str, str] | None:
        return self.queue.feedback(item_id, stage) if self.queue is not None else None

    async def _taken(self, qid: int) -> None:
        if self.queue is not None:
            self.queue.mark_taken(qid, self.run_id)

    async def _match(self, item_id: str, stage: str, output: str) -> Entry | None:
        return self.queue.match(item_id, stage, output) if self.queue is not None else None

    async def _enqueue(self, **entry: Any) -> None:
        if self.queue is not None:
            self.queue.enqueue(**entry)

    # -- what the user's own chains call (chainfleet.code.fleet: ``fleet.review``) ---------------

    async def decision(self, item_id: str, stage: str, output: str) -> Entry | None:
        """The latest entry made on this output of the item at ``stage`` (waiting or decided)."""
        return await self._match(item_id, stage, output)

    async def take(self, qid: int) -> None:
        """The run acted on this decision (it can no longer be undone)."""
        await self._taken(qid)

    async def ask(self, **entry: Any) -> None:
        """Queue an output for a person; the item waits."""
        await self._enqueue(**entry)
        self.parked += 1

    # -- what the stage code calls --------------------------------------------------------------

    async def context(self, chain: Chain, stage: Stage) -> dict[str, str]:
        """``feedback``/``previous`` for a stage a reviewer sent this item back to, else {}."""
        if not self.enabled:
            return {}
        found = await self._feedback(chain.item.id, stage.name)
        if found is None:
            return {}
        qid, note, previous = found
        await self._taken(qid)
        return {"feedback": note, "previous": previous}

    def gate_failed(self, chain: Chain, stage: Stage, reason: str) -> bool:
        """Whether a refused output waits for a person (``review: on_gate_fail``) rather than
        failing the item; the reason is kept for the reviewer."""
        if stage.review is None or stage.review.mode != "on_gate_fail":
            return False
        chain.gate_failures[stage.name] = reason
        return True

    async def park(self, chain: Chain, stage: Stage) -> bool:
        """After ``stage``'s result is kept: True when the item waits for a person here."""
        if not self.enabled:
            return False
        output = as_text(chain.outputs[stage.name])  # a structured output is reviewed as JSON
        entry = await self._match(chain.item.id, stage.name, output)
        if entry is not None and entry.state == "waiting":
            self.parked += 1
            return True
        if entry is not None and entry.state in ("approved", "edited"):
            await self._taken(entry.qid)
            if entry.final_output != output:
                self._keep_edit(chain, stage, entry.final_output)
            return False
        gate = chain.gate_failures.pop(stage.name, None)
        if stage.review is None:
            return False
        reason = stage.review.wants(chain.item.id, stage.name, gate_failed=gate is not None)
        if reason is None:
            return False
        checks = _checks(chain, stage)
        topic = _topic(chain.item.fields, self.pipeline.input)
        await self._enqueue(
            run_id=self.run_id,
            index=chain.item.index,
            item_id=chain.item.id,
            stage=stage.name,
            reason=f"gate failed: {gate}" if gate else reason,
            output=output,
            checks=checks,
            quality=float(assess(output, topic).score),
        )
        self.parked += 1
        return True

    def _keep_edit(self, chain: Chain, stage: Stage, text: str) -> None:
        """The reviewer's edit becomes the stage's output in this run (results.jsonl shows it);
        the machine's output stays stored under its input key, so a later resume finds both."""
        value = chain.outputs[stage.name] = _decode(stage, text)
        self.store.save_stage(
            self.run_id,
            chain.item.index,
            stage.name,
            text,
            input_tokens=0,
            output_tokens=0,
            seconds=0.0,
            attempts=0,
            item_id=chain.item.id,
            key=None,
            durable=False,
            is_json=not isinstance(value, str),
        )


def with_feedback(prompt: str, stage: Stage, note: str) -> str:
    """The prompt a sent-back stage is called with: when its template does not place
    ``{{ feedback }}`` itself, the reviewer's note is appended, so the model always sees it."""
    if stage.uses_feedback:
        return prompt
    return prompt + FEEDBACK_HEADER + note


def _checks(chain: Chain, stage: Stage) -> dict[str, str]:
    """The gate's results on the output under review, by check name, for the reviewer."""
    outcome = chain.gates.get(stage.name)
    if outcome is None or not outcome.tries:
        return {}
    return {
        r.name: ("passed" if r.passed else f"failed: {r.reason}")
        + (f" ({r.score:g})" if r.score is not None else "")
        for r in outcome.tries[-1]
    }


def _decode(stage: Stage, text: str) -> Any:
    """An edited structured output as its value (the review checked it against the contract)."""
    if stage.contract is None:
        return text
    value, problem = stage.contract.check(text)
    return text if problem else value


def _topic(fields: dict[str, Any], input_field: str) -> str | None:
    from chainfleet.report.quality import topic_of

    return topic_of(fields, input_field)
