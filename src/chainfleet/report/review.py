"""Review in the report: counts read from the store, and time waiting for a person.

Time a person took is never machine time: ``wall_seconds`` runs from the first admission to
the last result of one run, and a run ends when its items are parked, so the hours an item
waits for a reviewer fall between runs. They are reported here, apart, as
``human_wait_seconds`` (queued to decided, summed over decided outputs; still waiting: up to
now).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from chainfleet.report.duration import fmt_duration
from chainfleet.store.review_queue import ReviewQueue
from chainfleet.store.runstore import RunStore

__all__ = ["item_reviews", "review_lines", "review_summary"]


def review_summary(store: RunStore, run_id: str) -> dict[str, Any]:
    """``report.json``'s ``review``: items of this run waiting, and decisions in the store."""
    queue = ReviewQueue(store.db)
    counts = queue.counts()
    waiting_items = store.db.execute(
        "SELECT COUNT(*) FROM items WHERE run_id = ? AND status = 'needs_review'", (run_id,)
    ).fetchone()[0]
    now = time.time()
    human = 0.0
    for entry in queue.entries():
        end = entry.decided if entry.decided is not None else now
        human += max(0.0, end - entry.queued)
    return {
        "items_waiting": int(waiting_items),
        **counts,
        "human_wait_seconds": round(human, 1),
        "human_wait_note": "queued to decided, summed over outputs; never part of wall_seconds",
    }


def review_lines(d: Mapping[str, Any]) -> list[str]:
    """The report's line on review (markdown), or none when nothing was ever queued."""
    review = d.get("review") or {}
    if not any(review.get(k) for k in ("waiting", "approved", "edited", "rejected", "items_waiting")):
        return []
    waiting = review.get("items_waiting", 0)
    return [
        f"Review: **{waiting} item{' waits' if waiting == 1 else 's wait'} for a person**; decisions so far: "
        f"{review.get('approved', 0)} approved, {review.get('edited', 0)} edited, "
        f"{review.get('rejected', 0)} rejected; time waiting for people "
        f"{fmt_duration(review.get('human_wait_seconds', 0.0))} (not in the wall time)"
    ]


def item_reviews(store: RunStore) -> dict[str, dict[str, Any]]:
    """Each reviewed item's latest review (results.jsonl's ``review``): state, stage, reviewer,
    note. Only items ever queued are here, so it stays small next to the input."""
    latest: dict[str, dict[str, Any]] = {}
    for entry in ReviewQueue(store.db).entries():
        latest[entry.item_id] = {
            "state": entry.state,
            "stage": entry.stage,
            "reviewer": entry.reviewer,
            "note": entry.note,
        }
    return latest
