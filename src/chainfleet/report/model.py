"""The run report: what parallelism bought, what failed, what it cost, how good the outputs are.

The two times that matter:

- ``wall_seconds``: from the first item admitted to the last result, on the run's clock. It does
  not count start-up (reading the pipeline, scanning the input) or writing the report.
- ``sequential_seconds``: the sum of every call's own service time (failed attempts included,
  backoff waits not), i.e. what the same calls would have taken one at a time.

``speedup`` is their ratio and ``time_saved_pct`` is ``100 * (1 - wall / sequential)``.

Example::

    report = run(pipeline, ["solar power", "tidal energy"])
    print(report.to_markdown())
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from chainfleet.limits.facts import limit_lines
from chainfleet.report.agents import agent_lines
from chainfleet.report.batch import batch_lines
from chainfleet.report.duration import fmt_duration
from chainfleet.report.estimate import concurrency_phrase, range_phrase, speed_phrase
from chainfleet.report.gates import gate_line
from chainfleet.report.markdown import report_markdown
from chainfleet.report.routes import routes_lines
from chainfleet.store.runstore import ItemRecord, RunStore

__all__ = ["RunReport"]

#: fatal errors that mean "fix your configuration" (exit code 2), unlike an exhausted quota
CONFIG_FATAL = ("auth_failed", "model_not_found", "endpoint_down", "unpriced_model")

#: the exit code of a run where nothing failed but some items wait for a person
EXIT_REVIEW = 3

#: report.json lists at most this many failures and per-item quality rows (the counts are exact)
LIST_CAP = 1000


@dataclass
class RunReport:
    """The numbers of one run. ``to_dict()`` is report.json; ``to_markdown()`` is report.md."""

    run_id: str
    pipeline: str
    concurrency: int
    stages_order: list[str]
    input_field: str = "input"
    items_total: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    items_skipped: int = 0
    #: items parked for a person (``review:``): never failed
    items_needs_review: int = 0
    #: review counts and time waiting for people (chainfleet.report.review)
    review: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    sequential_seconds: float = 0.0
    #: how ``sequential_seconds`` was found (chainfleet.report.estimate.SequentialEstimate.to_dict)
    sequential_estimate: dict[str, Any] | None = None
    backoff_seconds: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    quality: list[dict[str, Any]] = field(default_factory=list)
    quality_sums: dict[str, float] = field(default_factory=dict)
    #: waits: limiter_seconds, cooldown_seconds, backoff_seconds
    waits: dict[str, float] = field(default_factory=dict)
    #: achieved requests/min and tokens/min, and each model's limits (told or learned)
    rates: dict[str, Any] = field(default_factory=dict)
    #: "auto" when the chains in flight adapted; then ``concurrency`` is the cap
    concurrency_mode: str = "fixed"
    concurrency_peak: float | None = None
    #: stage results reused from the store (resume) and answered from the response cache
    reused: int = 0
    #: calls of the user's own chain answered from its journal (not called, not paid)
    replayed: int = 0
    #: the user's own chain: paths no limiter knows, passed through unlimited -> calls
    passthrough: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    stopped: str | None = None
    #: the kind of the fatal error that stopped the run (``auth_failed`` ...), if one did
    stopped_kind: str | None = None
    input_error: str | None = None
    #: gates and contracts: pass rates, revisions, repairs (see chainfleet.report.gates)
    gates: dict[str, Any] | None = None
    #: batch mode: chunks and requests by state, provider wait (see chainfleet.report.batch)
    batch: dict[str, Any] | None = None
    #: agent stages: turns per item, and per tool its calls, errors, latency (chainfleet.report.agents)
    agents: dict[str, Any] | None = None
    #: per route, per target calls, tokens, cost and 429s, and why traffic moved (chainfleet.report.routes)
    routes: dict[str, Any] | None = None
    #: every session of the run (chainfleet.store.sessions): when, how it ended, what it did
    sessions: list[dict[str, Any]] = field(default_factory=list)
    store: RunStore | None = field(default=None, repr=False, compare=False)

    @property
    def speedup(self) -> float | None:
        """How many times faster than one at a time; None for a batch run (its calls waited for
        the provider's batches, so one at a time is no comparison: online is, see ``plan --batch``)."""
        if self.wall_seconds <= 0 or self.sequential_seconds <= 0 or self.batch:
            return None
        return self.sequential_seconds / self.wall_seconds

    @property
    def time_saved_pct(self) -> float | None:
        if self.sequential_seconds <= 0 or self.batch:
            return None
        return 100.0 * (1.0 - self.wall_seconds / self.sequential_seconds)

    @property
    def exit_code(self) -> int:
        """0 when every item succeeded; 2 when configuration stopped the run (the input broke
        mid-run, the key was refused, the model does not exist); else 1."""
        if self.stopped_kind == "interrupted":
            return 130
        if self.input_error or self.stopped_kind in CONFIG_FATAL:
            return 2
        if self.items_needs_review and self.items_succeeded + self.items_needs_review == self.items_total:
            return EXIT_REVIEW
        return 0 if self.items_succeeded == self.items_total else 1

    def results(self) -> Iterator[ItemRecord]:
        """Every item's outcome in input order (read back from the run store)."""
        if self.store is None:
            return iter(())
        return self.store.items(self.run_id)

    def outputs(self) -> dict[str, str | None]:
        """Each item's final output by id (None when it failed): handy for small runs."""
        last = self.stages_order[-1]
        return {r.id: r.outputs.get(last) for r in self.results()}

    def quality_summary(self) -> dict[str, Any]:
        sums = self.quality_sums
        n = int(sums.get("items", 0))
        if not n:
            return {"items": 0}
        return {
            "items": n,
            "mean_score": round(sums["score"] / n, 1),
            "mean_words": round(sums["words"] / n, 1),
            "mean_readability": round(sums["readability"] / n, 1),
            "topic_covered_pct": round(100 * sums["topic_covered"] / n, 1),
        }

    def to_dict(self) -> dict[str, Any]:
        speedup, saved = self.speedup, self.time_saved_pct
        return {
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "stages_order": self.stages_order,
            "input_field": self.input_field,
            "concurrency": self.concurrency,
            "items": {
                "total": self.items_total,
                "succeeded": self.items_succeeded,
                "failed": self.items_failed,
                "skipped": self.items_skipped,
                # only when items wait for a person, so reports of runs without review keep their shape
                **({"needs_review": self.items_needs_review} if self.items_needs_review else {}),
            },
            "review": self.review,
            "wall_seconds": round(self.wall_seconds, 4),
            "wall_clock_note": "first admission to last result; excludes start-up and report writing",
            "sequential_seconds": round(self.sequential_seconds, 4),
            "sequential_estimate": self.sequential_estimate,
            "speedup": round(speedup, 3) if speedup is not None else None,
            "time_saved_pct": round(saved, 1) if saved is not None else None,
            "backoff_seconds": round(self.backoff_seconds, 4),
            "waits": {k: round(v, 4) for k, v in self.waits.items()},
            "concurrency_mode": self.concurrency_mode,
            "concurrency_peak": self.concurrency_peak,
            "calls": self.calls,
            "rates": self.rates,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "stages": self.stages,
            "failures": self.failures[:LIST_CAP],
            "quality": {**self.quality_summary(), "per_item": self.quality[:LIST_CAP]},
            "reused_stage_results": self.reused,
            "replayed_calls": self.replayed,
            "unlimited_paths": self.passthrough,
            "cache_hits": self.cache_hits,
            "stopped": self.stopped,
            "stopped_kind": self.stopped_kind,
            "input_error": self.input_error,
            "gates": self.gates,
            "batch": self.batch,
            "agents": self.agents,
            "routes": self.routes,
            "sessions": self.sessions,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def summary_lines(self) -> list[str]:
        """A few lines for the terminal."""
        lines = [
            f"run {self.run_id}: {self.items_succeeded}/{self.items_total} items succeeded, "
            f"{self.items_failed} failed"
            + (f", {self.items_skipped} skipped" if self.items_skipped else "")
            + (f", {self.items_needs_review} wait for review" if self.items_needs_review else ""),
            self._wall_line(),
            f"calls {self.calls.get('total', 0)} ({self.calls.get('retried', 0)} retried, "
            f"{self.calls.get('rate_limited', 0)} rate-limited); tokens in "
            f"{self.tokens.get('input', 0):,}, out {self.tokens.get('output', 0):,}",
        ]
        gated = gate_line(self.gates)
        if gated:  # the calls the gates added: revisions, repairs, judges
            lines.append(gated)
        if self.sequential_estimate and not self.batch and not self.ran_one_at_a_time:
            lines.insert(2, f"  one at a time: {self.sequential_estimate['note']}")
        lines += batch_lines(self.batch)
        lines += agent_lines(self.agents)
        lines += routes_lines(self.routes)
        lines.extend(limit_lines(self.rates.get("models") or {}))
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}")
        for failure in self.failures[:10]:
            lines.append(
                f"  item {failure['id']} failed at {failure['stage']}: "
                f"{failure['type']}: {failure['message']}"
            )
        if len(self.failures) > 10:
            lines.append(f"  ... and {self.items_failed - 10} more (see results.jsonl)")
        return lines

    def _wall_line(self) -> str:
        if self.batch:  # its calls waited for the provider's batches: online is the comparison
            return f"wall {fmt_duration(self.wall_seconds)} {BATCH_COMPARISON}"
        if self.ran_one_at_a_time:
            return f"wall {fmt_duration(self.wall_seconds)} at concurrency 1: it ran one at a time"
        uncertain = range_phrase(self.sequential_estimate, self.wall_seconds)
        return (
            f"wall {fmt_duration(self.wall_seconds)} at "
            f"{concurrency_phrase(self.concurrency, self.concurrency_mode, self.sequential_estimate)}; "
            f"one at a time would take {'about ' if uncertain else ''}{fmt_duration(self.sequential_seconds)}"
            + (f" ({uncertain})" if uncertain else _saved_note(self.speedup, self.time_saved_pct, self.waits))
        )

    @property
    def ran_one_at_a_time(self) -> bool:
        """A run at concurrency 1: it is the one-at-a-time run, so there is nothing to compare."""
        return self.concurrency == 1 and self.concurrency_mode != "auto"

    def to_markdown(self) -> str:
        return report_markdown(self.to_dict())


#: what a batch run says in place of "one at a time would take": its calls waited for the
#: provider's batch window, which one at a time would not; online is the comparison
BATCH_COMPARISON = "in batch mode; compare it with online: `chainfleet plan PIPELINE --batch`"


def _saved_note(speedup: float | None, saved: float | None, waits: dict[str, float]) -> str:
    phrase = speed_phrase(speedup, saved)
    if phrase is None:
        return ""
    if speedup is not None and speedup < 1:
        names = {
            "limiter_seconds": "waiting for the rate limiter",
            "cooldown_seconds": "waiting out 429 cooldowns",
            "backoff_seconds": "in backoff between retries",
        }
        biggest = max(names, key=lambda k: waits.get(k, 0.0))
        seconds = waits.get(biggest, 0.0)
        why = f": {fmt_duration(seconds)} went {names[biggest]}" if seconds > 0 else ""
        return f" ({phrase}{why})"
    return f" ({phrase})"
