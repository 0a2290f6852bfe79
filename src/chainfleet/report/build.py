"""The run report built from the run store alone: what every renderer (report.json, report.md,
report.html, the terminal) and ``chainfleet report`` start from.

Nothing here knows the runner: a run that just ended, one resumed three times, one killed by
``kill -9`` and one of an older chainfleet are all reported from what their store holds:

- the run's row (pipeline, settings: stage order, input field, concurrency);
- its sessions (:mod:`chainfleet.store.sessions`): calls, tokens, cost, service time and waits are
  summed over them; wall time is the sum of their active times; the last session says how the
  run stopped and what the rate limits were;
- every call (per-stage latencies);
- every item (counts, failures, quality; a record's attempts and seconds are what it really
  took, whichever session made them).

A store from before sessions existed (or a run that saved none) is rebuilt from its calls.

Example::

    with RunStore.open("runs/today/run.db") as store:
        report = build_report(store, store.runs()[-1]["run_id"])
        print(report.to_markdown())
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

from chainfleet.pipeline.gates import as_text
from chainfleet.report.agents import agent_section
from chainfleet.report.batch import batch_section
from chainfleet.report.estimate import SequentialEstimate, by_items, estimate_sequential
from chainfleet.report.gates import gate_summary
from chainfleet.report.model import LIST_CAP, RunReport
from chainfleet.report.quality import measures, topic_of
from chainfleet.report.review import review_summary
from chainfleet.report.routes import routes_section
from chainfleet.store.runstore import ItemRecord, RunStore
from chainfleet.store.sessions import SessionRow
from chainfleet.store.stats import COUNTERS, RunStats, StageStats

__all__ = ["SUMMED", "build_report", "limits_in_force", "one_at_a_time", "score_final", "session_totals"]

#: session counters that add up over the sessions of a run
SUMMED = (*COUNTERS, "wall_seconds", "done")

#: the run statuses of a run that ended (any other: killed, or still running)
ENDED = ("done", "interrupted", "stopped")


def one_at_a_time(
    store: RunStore,
    run_id: str,
    servers: Mapping[str, str | None] | None,
    models: Mapping[str, Mapping[str, Any]] | None = None,
) -> SequentialEstimate:
    """What running the same calls one at a time would take, from the run's calls: the plain
    sum of their service times unless the calls show a server queueing them, never less than
    the rate limits in force allow (:mod:`chainfleet.report.estimate`). ``models``: each
    model's limit facts as the run's last session saved them. The one place this estimate is
    made."""
    return estimate_sequential(store.calls(run_id), servers=servers, limits=limits_in_force(models or {}))


def limits_in_force(models: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per model, the requests and tokens a minute that held the run (told or learned, times
    its share of a key that other jobs use): one at a time is held by them too.

    On a shared key the share at the run's end (``held``) is often more than the job had while
    the others ran (they may finish first); what the others left over the run (the limit less
    their ``others_pct``) is the rate one at a time would have had, so the lower of the two
    counts. Four jobs on one key of 1,200/min, each with 76% of it taken by the others, are held
    to about 280/min, not the 408/min of the share they reached at the end."""
    found: dict[str, dict[str, float | None]] = {}
    for spec, facts in models.items():
        held = facts.get("held") or {}
        rpm = held.get("rpm") or facts.get("rpm_limit")
        tpm = held.get("tpm") or facts.get("tpm_limit")
        others = facts.get("others_pct")
        if facts.get("shared") and isinstance(others, (int, float)) and 0 <= others < 100:
            left = 1 - others / 100
            rpm = _lower(rpm, facts.get("rpm_limit"), left)
            tpm = _lower(tpm, facts.get("tpm_limit"), left)
        if rpm or tpm:
            found[spec] = {"rpm": rpm, "tpm": tpm}
    return found


def _lower(rate: float | None, limit: Any, left: float) -> float | None:
    """``rate``, or what the others left of ``limit`` when that is lower."""
    if not isinstance(limit, (int, float)) or limit <= 0:
        return rate
    rest = limit * left
    return rest if rate is None or rest < rate else rate


def _item_seconds(store: RunStore, run_id: str) -> float:
    """The items' times summed (a code chain's item keeps its whole time, see CodeWork)."""
    row = store.db.execute("SELECT SUM(seconds) FROM items WHERE run_id = ?", (run_id,)).fetchone()
    return float(row[0] or 0.0)


def session_totals(sessions: Iterable[SessionRow]) -> dict[str, Any]:
    """The sessions' counters summed; ``cost_usd`` is None when any session's cost is unknown."""
    totals: dict[str, Any] = {key: 0 for key in SUMMED}
    cost: float | None = 0.0
    for session in sessions:
        for key in SUMMED:
            totals[key] += session.stats.get(key, 0) or 0
        spent = session.stats.get("cost_usd", 0.0)
        cost = None if cost is None or spent is None else cost + spent
    totals["cost_usd"] = cost
    return totals


def build_report(store: RunStore, run_id: str) -> RunReport:
    """The report of run ``run_id`` from ``store`` alone. Scores each succeeded output's quality
    on the way (once: the scores are stored)."""
    store.flush()
    run = _run_row(store, run_id)
    settings: Mapping[str, Any] = run.get("settings") or {}
    sessions = store.sessions.of_run(run_id)
    stages, order_seen = _stage_calls(store, run_id)
    if sessions:
        totals = session_totals(sessions)
        facts: Mapping[str, Any] = sessions[-1].stats.get("facts") or {}
    else:
        totals, facts = _totals_from_calls(store, run_id), {}
    order = list(settings.get("stages_order") or []) or _stage_order(store, run_id, order_seen) or ["output"]
    sequential = one_at_a_time(store, run_id, settings.get("servers"), facts.get("models") or {})
    if settings.get("code"):  # the user's own chain: its items' times, not only its calls'
        sequential = by_items(_item_seconds(store, run_id), sequential)
    report = RunReport(
        run_id=run_id,
        pipeline=run.get("pipeline", ""),
        concurrency=int(facts.get("concurrency") or settings.get("concurrency") or 0),
        stages_order=order,
        input_field=settings.get("input_field", "input"),
        wall_seconds=float(totals["wall_seconds"]),
        sequential_seconds=sequential.seconds,
        sequential_estimate=sequential.to_dict(),
        backoff_seconds=float(totals["backoff_seconds"]),
        calls={
            "total": totals["calls"],
            "succeeded": totals["calls_succeeded"],
            "retried": totals["calls_retried"],
            "rate_limited": totals["rate_limited"],
            "failed": failed_for_good(store, run_id),
            "failed_attempts": totals["calls_failed"],
        },
        tokens={
            "input": totals["input_tokens"],
            "output": totals["output_tokens"],
            "cached": totals["cached_tokens"],
        },
        cost_usd=round(totals["cost_usd"], 6) if totals["cost_usd"] is not None and sessions else None,
        stages=_stages(stages, order, order_seen, code=bool(settings.get("code"))),
        waits={
            "limiter_seconds": float(totals["limiter_seconds"]),
            "cooldown_seconds": float(totals["cooldown_seconds"]),
            "backoff_seconds": float(totals["backoff_seconds"]),
        },
        rates=_rates(totals, facts.get("models") or {}, _send_span(store, run_id)),
        concurrency_mode=facts.get("concurrency_mode", "fixed"),
        concurrency_peak=facts.get("concurrency_peak"),
        reused=int(totals["reused"]),
        cache_hits=int(totals["cache_hits"]),
        replayed=int(totals.get("replayed") or 0),
        passthrough=dict(facts.get("passthrough") or {}),
        stopped=facts.get("stopped"),
        stopped_kind=facts.get("stopped_kind"),
        input_error=facts.get("input_error"),
        sessions=[s.to_dict() for s in sessions],
        routes=routes_section(s.stats for s in sessions),
        store=store,
    )
    status = run.get("status", "running")
    if status not in ENDED:
        how = "its calls (cost and rate limits unknown)" if not sessions else "its store"
        killed = bool(sessions) and sessions[-1].status == "killed-unknown"
        state = "was killed mid-run (resumable)" if killed else f"is {status}"
        report.stopped = f"the run {state} and saved no report: numbers rebuilt from {how}"
    _add_items(report, store)
    report.gates = gate_summary(store, run_id)
    report.batch = batch_section(store, wall_seconds=report.wall_seconds)
    report.agents = agent_section(store, run_id, settings.get("agent_prices"))
    report.review = review_summary(store, run_id)
    return report


def _run_row(store: RunStore, run_id: str) -> dict[str, Any]:
    return store.run(run_id) or {"run_id": run_id}


def _send_span(store: RunStore, run_id: str) -> float:
    """Seconds from each session's first call sent to its last, added up over the sessions:
    the span a server sees the run's requests arrive in."""
    rows = store.db.execute(
        "SELECT MAX(started) - MIN(started) FROM calls WHERE run_id = ? GROUP BY session", (run_id,)
    )
    return float(sum(span or 0.0 for (span,) in rows))


def _rates(totals: Mapping[str, Any], models: Mapping[str, Any], span: float = 0.0) -> dict[str, Any]:
    """Achieved requests/min and tokens/min, beside its models' limits (as the last session
    left them). Over the span from the first call sent to the last (what the server's own count
    over the run says); over the wall time when that span is under a second."""
    over = "calls sent" if span >= 1.0 else "wall time"
    minutes = (span if span >= 1.0 else float(totals["wall_seconds"])) / 60
    calls, succeeded = int(totals["calls"]), int(totals["calls_succeeded"])
    tokens = int(totals["input_tokens"]) + int(totals["output_tokens"])  # counted on success

    def per_minute(count: int) -> float | None:
        return round(count / minutes, 1) if minutes > 0 else None

    return {
        "achieved_rpm": per_minute(succeeded),
        "achieved_tpm": per_minute(tokens),
        "attempts_rpm": per_minute(calls),
        "attempts": calls,
        "rate_limited": int(totals["rate_limited"]),
        "rate_limited_pct": round(100 * int(totals["rate_limited"]) / calls, 2) if calls else 0.0,
        #: the span the rates are over: "calls sent" (first call sent to last) or "wall time"
        "rates_over": over,
        "span_seconds": round(minutes * 60, 4),
        "models": dict(models),
    }


def failed_for_good(store: RunStore, run_id: str) -> int:
    """Calls that failed for good: the last attempt of each failed item, when that attempt
    failed (an attempt retried later, in this session or another, did not fail for good; an
    item that failed its contract failed on a call that succeeded)."""
    row = store.db.execute(
        "SELECT COUNT(*) FROM items i WHERE i.run_id = ? AND i.status = 'failed' AND ("
        "SELECT c.status FROM calls c WHERE c.run_id = i.run_id AND c.idx = i.idx "
        "ORDER BY c.session DESC, c.started DESC LIMIT 1) != 'ok'",
        (run_id,),
    ).fetchone()
    return int(row[0])


def _stage_calls(store: RunStore, run_id: str) -> tuple[dict[str, StageStats], list[str]]:
    """Per stage, every attempt's service time over all sessions (``write:judge`` counts
    under ``write``), and the stage labels in the order their first calls came."""
    stages: dict[str, StageStats] = {}
    order: list[str] = []
    rows = store.db.execute(
        "SELECT stage, ended - started, status FROM calls WHERE run_id = ? ORDER BY session, started",
        (run_id,),
    )
    for label, seconds, status in rows:
        name = label.split(":", 1)[0]
        stage = stages.get(name)
        if stage is None:
            stage = stages[name] = StageStats(seconds=array("d"))
            order.append(name)
        stage.calls += 1
        stage.seconds.append(seconds)
        if status != "ok":
            stage.failed += 1
    return stages, order


def _stages(
    stages: Mapping[str, StageStats], order: list[str], seen: list[str], *, code: bool
) -> dict[str, dict[str, Any]]:
    """Each stage's numbers: the pipeline's stages in order; for the user's own chain, the
    labels its calls had (``fleet.stage``, else the model), in the order they first came."""
    names = seen if code else order
    return {name: _stage_numbers(stages.get(name) or StageStats()) for name in names}


#: calls in a stage from which its percentiles are taken with numpy
NUMPY_FROM = 50_000


def _stage_numbers(stage: StageStats) -> dict[str, Any]:
    """A stage's entry of report.json (as ``StageStats.to_dict``), its percentiles taken with
    numpy over the flat array when it is large: a million calls cost 8 MB, not a sorted list of
    float objects (~32 MB). Below ``NUMPY_FROM`` calls a sorted list is small and numpy's import
    (0.15 s of CPU) would be most of a short run's report."""
    if len(stage.seconds) < NUMPY_FROM:
        return stage.to_dict()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return stage.to_dict()
    values = np.frombuffer(stage.seconds, dtype=np.float64)
    p50, p95, top = (
        (np.percentile(values, [50, 95]).tolist() + [float(values.max())]) if len(values) else (0, 0, 0)
    )
    return {
        "calls": stage.calls,
        "failed": stage.failed,
        "p50_seconds": round(float(p50), 4),
        "p95_seconds": round(float(p95), 4),
        "max_seconds": round(float(top), 4),
    }


def _totals_from_calls(store: RunStore, run_id: str) -> dict[str, Any]:
    """A run with no sessions (an older chainfleet): its counters rebuilt from its calls."""
    stats = RunStats()
    first: float | None = None
    last = 0.0
    for call in store.calls(run_id):
        first = call.queued if first is None else min(first, call.queued)
        last = max(last, call.ended)
        stats.calls += 1
        stats.service_seconds += call.ended - call.started
        stats.calls_retried += call.attempt > 1
        stats.rate_limited += call.status == "rate_limited"
        stats.limiter_seconds += call.limiter_wait
        stats.cooldown_seconds += call.cooldown_wait
        stats.backoff_seconds += call.backoff
        stats.input_tokens += call.input_tokens
        stats.output_tokens += call.output_tokens
        if call.status == "ok":
            stats.calls_succeeded += 1
        else:
            stats.calls_failed += 1
    totals: dict[str, Any] = {key: getattr(stats, key, 0) for key in SUMMED}
    totals["wall_seconds"] = max(0.0, last - first) if first is not None else 0.0
    totals["cost_usd"] = None
    return totals


def _stage_order(store: RunStore, run_id: str, known: Iterable[str]) -> list[str]:
    """The pipeline's stage order for a run that did not save it: the longest chain of
    outputs among the first items (stored in the order they were made)."""
    order: list[str] = []
    for record in _first(store.items(run_id), 1000):
        if len(record.outputs) > len(order):
            order = list(record.outputs)
    return order + [name for name in known if name not in order]


def _first(records: Iterable[ItemRecord], count: int) -> list[ItemRecord]:
    """The first ``count`` records; a store cursor is closed rather than read to its end."""
    it = iter(records)
    try:
        return list(islice(it, count))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _add_items(report: RunReport, store: RunStore) -> None:
    """Counts, failures and quality from the stored items; outputs not yet scored are scored
    and their scores stored (in batches of 1,000)."""
    final = report.stages_order[-1]
    updates: list[tuple[int, dict[str, Any]]] = []
    counts = {"succeeded": 0, "failed": 0, "skipped": 0, "needs_review": 0}
    for record in store.items(report.run_id):
        counts[record.status] = counts.get(record.status, 0) + 1
        if record.status == "failed" and record.error and len(report.failures) < LIST_CAP:
            report.failures.append({"id": record.id, **record.error})
        if record.status != "succeeded":
            continue
        quality: dict[str, Any] | None = record.quality
        if quality is None:
            quality = score_final(record.outputs.get(final, ""), record.input, report.input_field)
            updates.append((record.index, quality))
            if len(updates) >= 1000:
                store.save_quality(report.run_id, updates)
                updates.clear()
        for key in ("score", "words", "readability", "topic_covered"):
            report.quality_sums[key] = report.quality_sums.get(key, 0.0) + float(quality[key])
        report.quality_sums["items"] = report.quality_sums.get("items", 0.0) + 1
        if len(report.quality) < LIST_CAP:
            report.quality.append({"id": record.id, **quality})
    if updates:
        store.save_quality(report.run_id, updates)
    store.flush()
    report.items_succeeded = counts["succeeded"]
    report.items_failed = counts["failed"]
    report.items_skipped = counts["skipped"]
    report.items_needs_review = counts["needs_review"]
    report.items_total = sum(counts.values())


def score_final(output: Any, fields: Mapping[str, Any], input_field: str) -> dict[str, Any]:
    """The quality of an item's final output (a structured one as its JSON), against the
    topic its input names: what the runner stores as an item finishes, and what a report
    scores for an item stored without one."""
    return measures(as_text(output), topic_of(dict(fields), input_field))
