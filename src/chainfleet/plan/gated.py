"""Expected calls per item from a pipeline's gates: judges, revisions and repairs.

A plain chain makes one call a stage. A gated one makes more, and a plan that counts only the
stages is short by all of them (the gated example: 3 calls a stage-count plan, near 5 measured):

- a stage whose gate fails is tried again (``on_fail: revise``, up to ``max_revisions``): with a
  try passing at rate p, it makes ``1 + q + q^2 + ... + q^R`` tries (q = 1 - p); a revision that
  starts from an earlier stage (``revise:``) makes that stage's calls again too;
- every try asks each ``judge:`` of the gate once;
- a reply to a schema (a stage's ``output:``, and every judge's verdict) that does not validate
  is asked again, a repair: at an invalid-reply rate r, ``r + r^2 + ... + r^M`` repairs a call
  (M = ``max_repairs``, 2 for a judge).

p and r are assumptions, shown beside the plan and settable (``--pass-rate``, ``--repair-rate``);
a ``compare`` run measures them. The simulated model's ``invalid_output_rate`` is its r.

Example::

    pipeline = Pipeline.from_yaml("examples/content_gated.yaml")
    stages = expected_calls(pipeline, pass_rate=0.8, repair_rate=0.15)
    sum(s.calls for s in stages)   # about 5.1 calls an item, not 3
"""

from __future__ import annotations

from dataclasses import dataclass

from chainfleet.pipeline import Pipeline, Stage
from chainfleet.pipeline.gates import JudgeCheck

__all__ = ["JUDGE_REPAIRS", "StageCalls", "expected_calls"]

#: the repairs a judge's verdict gets (the stage executor's fixed number)
JUDGE_REPAIRS = 2


@dataclass(frozen=True)
class StageCalls:
    """One stage's expected calls per item, by kind (the sum is :attr:`calls`)."""

    name: str
    #: tries of the stage itself (1, plus the expected revisions)
    tries: float
    judges: float
    repairs: float
    #: calls of earlier stages made again because a revision of this one starts there
    again: float = 0.0

    @property
    def calls(self) -> float:
        return self.tries + self.judges + self.repairs + self.again


def geometric(rate: float, terms: int) -> float:
    """``rate + rate^2 + ... + rate^terms``: the expected extra tries when each fails at ``rate``."""
    return sum(rate**k for k in range(1, terms + 1))


def expected_calls(pipeline: Pipeline, *, pass_rate: float, repair_rate: float) -> list[StageCalls]:
    """Each LLM stage's expected calls per item (tool steps make none), in order."""
    names = [s.name for s in pipeline.stages]
    plain: dict[str, float] = {}  # one try of each stage, with its repairs
    found = []
    for stage in pipeline.stages:
        if stage.is_tool:
            plain[stage.name] = 0.0
            continue
        own_repairs = geometric(repair_rate, stage.max_repairs) if stage.contract is not None else 0.0
        plain[stage.name] = 1.0 + own_repairs
        judges = sum(1 for c in stage.checks if isinstance(c, JudgeCheck))
        tries = 1.0 + (geometric(1.0 - pass_rate, revisions(stage)) if stage.checks else 0.0)
        start, end = names.index(stage.revise_from), names.index(stage.name)
        earlier = sum(plain[n] for n in names[start:end])
        found.append(
            StageCalls(
                name=stage.name,
                tries=tries,
                judges=tries * judges,
                repairs=tries * (own_repairs + judges * geometric(repair_rate, JUDGE_REPAIRS)),
                again=(tries - 1.0) * earlier,
            )
        )
    return found


def revisions(stage: Stage) -> int:
    """How many times a failed gate sends ``stage`` round again."""
    return stage.max_revisions if stage.checks and stage.failure_action == "revise" else 0
