"""The report's batch section, read from the run store alone (the ledger tables of m006).

``report.json`` gains ``batch`` when any stage ran in batch mode::

    "batch": {
      "chunks": {"submitted": 3, "in_progress": 0, "done": 3, "failed": 0, "not_sent": 0},
      "requests": {"submitted": 612, "distinct": 600, "resubmitted": 12,
                   "succeeded": 600, "errored": 7, "expired": 5, "in_batches": 0, "not_sent": 0},
      "request_ratio": 1.02,            # requests sent per (item, stage): 1.0 plus resubmissions
      "provider_wait_seconds": 2412.0,  # time with at least one batch at the provider
      "work_seconds": 3.1,              # the rest of the run's wall time: the driver's own work
      "turnaround_seconds": {"p50": 780.2, "max": 1201.7},
      "models": {"openai:gpt-4o-mini": 3}
    }

Times are wall-clock (``time.time()`` written with each chunk), so they add up across a resume.
"""

from __future__ import annotations

import time
from typing import Any

from chainfleet.store.runstore import RunStore

__all__ = ["batch_lines", "batch_markdown", "batch_section"]


def batch_section(store: RunStore, *, wall_seconds: float | None = None) -> dict[str, Any] | None:
    """The batch numbers of every chunk in ``store``, or None when batch mode was never used.

    ``work_seconds`` is the run's wall time (``wall_seconds``, up to now) less the time in it
    with a batch out.
    """
    try:
        rows = store.db.execute(
            "SELECT spec, state, batch_id, submitted, ended, requests FROM batch_chunks"
        ).fetchall()
    except Exception:  # a store from before m006 has no ledger
        return None
    if not rows:
        return None
    now = time.time()
    sent = [r for r in rows if r[2] is not None]
    chunks = {
        "submitted": len(sent),
        "in_progress": sum(1 for r in sent if r[1] == "submitted"),
        "done": sum(1 for r in sent if r[1] == "ended"),
        "failed": sum(1 for r in sent if r[1] == "failed"),
        "not_sent": len(rows) - len(sent),
    }
    requests = _requests(store)
    intervals = sorted((r[3], r[4] or now) for r in sent if r[3] is not None)
    wait = _union(intervals)
    first = min((r[3] for r in sent if r[3]), default=now)
    started = now - wall_seconds if wall_seconds is not None else first
    in_run = _union([(max(a, started), b) for a, b in intervals if b > started])
    turnaround = sorted(b - a for a, b in intervals)
    models: dict[str, int] = {}
    for r in sent:
        models[r[0]] = models.get(r[0], 0) + 1
    distinct = requests["distinct"]
    return {
        "chunks": chunks,
        "requests": requests,
        "request_ratio": round(requests["submitted"] / distinct, 4) if distinct else None,
        "provider_wait_seconds": round(wait, 3),
        "work_seconds": round(
            max(0.0, (wall_seconds if wall_seconds is not None else now - started) - in_run), 3
        ),
        "turnaround_seconds": {
            "p50": round(turnaround[len(turnaround) // 2], 3) if turnaround else None,
            "max": round(turnaround[-1], 3) if turnaround else None,
        },
        "models": models,
    }


def _requests(store: RunStore) -> dict[str, int]:
    states = dict(
        store.db.execute(
            "SELECT r.state, COUNT(*) FROM batch_requests r JOIN batch_chunks c ON c.chunk_id = r.chunk_id "
            "WHERE c.batch_id IS NOT NULL GROUP BY r.state"
        ).fetchall()
    )
    submitted, distinct = store.db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT r.custom_id) FROM batch_requests r "
        "JOIN batch_chunks c ON c.chunk_id = r.chunk_id WHERE c.batch_id IS NOT NULL"
    ).fetchone()
    not_sent = store.db.execute(
        "SELECT COUNT(*) FROM batch_requests r JOIN batch_chunks c ON c.chunk_id = r.chunk_id "
        "WHERE c.batch_id IS NULL"
    ).fetchone()[0]
    return {
        "submitted": submitted,
        "distinct": distinct,
        "resubmitted": submitted - distinct,
        "succeeded": states.get("succeeded", 0),
        "errored": states.get("errored", 0),
        "expired": states.get("expired", 0),
        "in_batches": states.get("submitted", 0),
        "not_sent": not_sent,
    }


def _union(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by ``intervals`` (time with at least one batch out)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def batch_lines(section: dict[str, Any] | None) -> list[str]:
    """The batch section for the terminal summary and report.md."""
    if not section:
        return []
    c, r = section["chunks"], section["requests"]
    return [
        f"batches {c['submitted']} submitted ({c['in_progress']} in progress, {c['done']} done, "
        f"{c['failed']} failed); requests {r['submitted']} for {r['distinct']} calls "
        f"(ratio {section['request_ratio']}; {r['succeeded']} succeeded, {r['errored']} errored, "
        f"{r['expired']} expired)",
        f"waiting on the provider {section['provider_wait_seconds']:.1f} s; "
        f"the driver's own work {section['work_seconds']:.1f} s",
    ]


def batch_markdown(section: dict[str, Any] | None) -> list[str]:
    """report.md's batch section (nothing when batch mode was not used)."""
    if not section:
        return []
    c, r, t = section["chunks"], section["requests"], section["turnaround_seconds"]
    return [
        "",
        "## Batches",
        "",
        "| chunks submitted | in progress | done | failed | not sent |",
        "|---:|---:|---:|---:|---:|",
        f"| {c['submitted']} | {c['in_progress']} | {c['done']} | {c['failed']} | {c['not_sent']} |",
        "",
        "| requests sent | calls | resubmitted | succeeded | errored | expired | still in batches |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['submitted']} | {r['distinct']} | {r['resubmitted']} | {r['succeeded']} | {r['errored']} "
        f"| {r['expired']} | {r['in_batches']} |",
        "",
        f"Requests sent per call: {section['request_ratio']} (1.0 plus resubmissions). Waiting on the "
        f"provider: {section['provider_wait_seconds']:.1f} s (time with a batch out); the driver's own "
        f"work: {section['work_seconds']:.1f} s. Batch turnaround: p50 {t['p50']} s, max {t['max']} s. "
        "Cost is at the batch price (half the list price).",
    ]
