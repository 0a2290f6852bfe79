"""Counters a run keeps while it goes: calls, tokens, time per stage, failures.

Kept apart from the runner so the report can be built from them, and small: one float per call
per stage (``array('d')``, 8 bytes) is all that grows with the input.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COUNTERS", "RunStats", "StageStats", "percentile"]


def percentile(values: array[float] | list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class StageStats:
    """Per-stage call counts and the service time of each attempt."""

    calls: int = 0
    failed: int = 0
    #: chains at this stage now (waiting for the limiter, calling, or backing off)
    in_flight: int = 0
    seconds: array[float] = field(default_factory=lambda: array("d"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "failed": self.failed,
            "p50_seconds": round(percentile(self.seconds, 50), 4),
            "p95_seconds": round(percentile(self.seconds, 95), 4),
            "max_seconds": round(max(self.seconds, default=0.0), 4),
        }


#: the RunStats counters that add up: over a cluster's workers and over a run's sessions
COUNTERS = (
    "calls",
    "calls_succeeded",
    "calls_failed",
    "calls_retried",
    "rate_limited",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "service_seconds",
    "backoff_seconds",
    "limiter_seconds",
    "cooldown_seconds",
    "reused",
    "cache_hits",
    "repairs",
    "revisions",
    "judge_calls",
    "replayed",
    "tool_calls",
    "tool_errors",
)


@dataclass
class RunStats:
    """Everything counted during a run; :mod:`chainfleet.report.model` turns it into numbers to read."""

    calls: int = 0
    calls_succeeded: int = 0
    calls_failed: int = 0
    calls_retried: int = 0
    rate_limited: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    #: sum of every attempt's own service time: what one call at a time would take
    service_seconds: float = 0.0
    #: time calls spent waiting between attempts
    backoff_seconds: float = 0.0
    #: time calls spent waiting for the rate limiter's budgets, and behind a 429's cooldown gate
    limiter_seconds: float = 0.0
    cooldown_seconds: float = 0.0
    first_admission: float | None = None
    last_result: float | None = None
    #: stage results taken from the store (resume) or the response cache instead of called
    reused: int = 0
    cache_hits: int = 0
    #: calls asked again because the reply broke the stage's contract, gate revisions, judge calls
    repairs: int = 0
    revisions: int = 0
    judge_calls: int = 0
    #: calls of code chains answered from the journal (issue 20): not called, not paid
    replayed: int = 0
    #: an agent's tool calls, and those that gave the model an error result
    tool_calls: int = 0
    tool_errors: int = 0
    admitted: int = 0
    in_flight: int = 0
    done: int = 0
    failed_now: int = 0
    stages: dict[str, StageStats] = field(default_factory=dict)

    @property
    def wall_seconds(self) -> float:
        if self.first_admission is None or self.last_result is None:
            return 0.0
        return max(0.0, self.last_result - self.first_admission)

    def calls_summary(self) -> dict[str, int]:
        """The ``calls`` block of report.json."""
        return {
            "total": self.calls,
            "succeeded": self.calls_succeeded,
            "retried": self.calls_retried,
            "rate_limited": self.rate_limited,
            "failed": self.calls_failed,
        }

    def stage(self, name: str) -> StageStats:
        found = self.stages.get(name)
        if found is None:
            found = self.stages[name] = StageStats()
        return found
