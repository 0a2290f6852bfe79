"""One item's progress through its pipeline: the outputs so far, the next stage, its attempts
and time, its error, its gate tries, and where it waits for a person.

A :class:`Chain` is what the runner admits, a backend advances and the stage code fills in; on
Ray the driver keeps a copy that follows the committed results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chainfleet.errors import CallError
from chainfleet.inputs import Item
from chainfleet.pipeline.gates import CheckResult

__all__ = ["Chain", "GateOutcome"]


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
    #: the stage it did not start because the run was interrupted (Ctrl-C): it stopped at that
    #: boundary, its finished stages kept, and a resume goes on from there
    stopped_at: str | None = None
    #: outputs a gate refused that wait for review instead (stage -> reason)
    gate_failures: dict[str, str] = field(default_factory=dict)
    #: what the item did so far, noted for its trace while tracing (chainfleet.trace), else None
    trace: Any = None
