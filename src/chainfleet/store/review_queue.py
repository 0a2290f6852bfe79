"""The review queue and every decision on it, in the run store (``run.db``, migration m005).

An item that needs a person is *queued* (one row of ``review_queue``) with the output under
review, why it waits, its gate results and its quality score. A reviewer *decides* it: approve,
edit (with the output after), or reject (with a note and the stage to go back to). Every
decision is a row of ``review_decisions`` (reviewer, time, action, note, output before and
after), kept for good: ``--export`` writes them out as gold data.

Deciding is atomic: ``UPDATE ... WHERE state = 'waiting'`` in one transaction, so two
reviewers (two terminals, two browsers, a script) never decide one item twice; the loser gets
``AlreadyDecided`` ("already decided by NAME at TIME").

The queue is keyed by item id and stage, not by run: ``chainfleet resume`` makes a new run in
the same store, finds each item's decision by the output it was made on, and goes on.

Example::

    queue = ReviewQueue(store.db)
    for entry in queue.waiting():
        queue.decide(entry.item_id, "approve", reviewer="ana")
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from chainfleet.errors import ConfigError
from chainfleet.store.atomic import kill_point

__all__ = ["ACTIONS", "AlreadyDecided", "Decision", "Entry", "ReviewError", "ReviewQueue"]

#: decisions a reviewer can make; the state an entry takes for each
ACTIONS = {"approve": "approved", "edit": "edited", "reject": "rejected"}


class ReviewError(ConfigError):
    """A decision that cannot be made: unknown item, not waiting, bad stage (exit code 2)."""


class AlreadyDecided(ReviewError):
    """Someone else decided this item first."""

    def __init__(self, item_id: str, reviewer: str, decided: float, action: str) -> None:
        self.reviewer, self.decided, self.action = reviewer, decided, action
        super().__init__(f"already decided by {reviewer} at {fmt_time(decided)} ({action})", where=item_id)


def fmt_time(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Entry:
    """One queued output and, once decided, its decision."""

    qid: int
    run_id: str
    index: int
    item_id: str
    stage: str
    reason: str
    output: str
    checks: dict[str, Any]
    quality: float | None
    queued: float
    state: str
    taken_by: str | None = None
    reviewer: str | None = None
    decided: float | None = None
    action: str | None = None
    note: str | None = None
    from_stage: str | None = None
    after: str | None = None
    input: dict[str, Any] | None = None

    @property
    def final_output(self) -> str:
        """The output the chain goes on with: the edit when there is one."""
        return self.after if self.state == "edited" and self.after is not None else self.output

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "stage": self.stage,
            "state": self.state,
            "reason": self.reason,
            "quality": self.quality,
            "checks": self.checks,
            "queued": fmt_time(self.queued),
            "input": self.input,
            "output": self.output,
        }


@dataclass(frozen=True)
class Decision:
    """One decision as kept (and exported)."""

    did: int
    item_id: str
    stage: str
    reviewer: str
    decided: float
    action: str
    note: str | None
    from_stage: str | None
    before: str
    after: str | None
    undone: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "stage": self.stage,
            "reviewer": self.reviewer,
            "time": fmt_time(self.decided),
            "action": self.action,
            "note": self.note,
            "from_stage": self.from_stage,
            "output_before": self.before,
            "output_after": self.after,
            "undone": fmt_time(self.undone) if self.undone else None,
        }


_ENTRY = (
    "SELECT q.qid, q.run_id, q.idx, q.item_id, q.stage, q.reason, q.output, q.checks, q.quality, "
    "q.queued, q.state, q.taken_by, d.reviewer, d.decided, d.action, d.note, d.from_stage, d.after "
    "FROM review_queue q LEFT JOIN review_decisions d ON d.did = q.decision "
)


def _entry(row: tuple[Any, ...]) -> Entry:
    values = list(row)
    values[7] = json.loads(values[7]) if values[7] else {}
    return Entry(*values)


class ReviewQueue:
    """Queue and decide on one run store's connection (the runner's, or a reviewer's own)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    # -- the runner's side ------------------------------------------------------------------------

    def enqueue(
        self,
        *,
        run_id: str,
        index: int,
        item_id: str,
        stage: str,
        reason: str,
        output: str,
        checks: dict[str, Any] | None = None,
        quality: float | None = None,
    ) -> int:
        """Queue one output; an older waiting output of the same item and stage is superseded."""
        self.db.execute(
            "UPDATE review_queue SET state = 'superseded' WHERE item_id = ? AND stage = ? "
            "AND state = 'waiting'",
            (item_id, stage),
        )
        cursor = self.db.execute(
            "INSERT INTO review_queue (run_id, idx, item_id, stage, reason, output, checks, quality, "
            "queued) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, index, item_id, stage, reason, output, json.dumps(checks or {}), quality, time.time()),
        )
        return int(cursor.lastrowid or 0)

    def match(self, item_id: str, stage: str, output: str) -> Entry | None:
        """The latest entry made on this very output (or whose edit is it), if any."""
        row = self.db.execute(
            _ENTRY + "WHERE q.item_id = ? AND q.stage = ? AND q.state != 'superseded' "
            "AND (q.output = ? OR (q.state = 'edited' AND d.after = ?)) ORDER BY q.qid DESC LIMIT 1",
            (item_id, stage, output, output),
        ).fetchone()
        return _entry(row) if row else None

    def feedback(self, item_id: str, stage: str) -> tuple[int, str, str] | None:
        """(entry, note, output rejected) of the latest rejection sending this item back to
        ``stage``. It stays the stage's feedback on every later resume, so the stage's input
        (and the result the store keeps for it) stays the same."""
        row = self.db.execute(
            "SELECT q.qid, d.note, d.before, d.stage FROM review_decisions d JOIN review_queue q "
            "ON q.decision = d.did WHERE d.item_id = ? AND d.from_stage = ? AND d.action = 'reject' "
            "ORDER BY d.did DESC LIMIT 1",
            (item_id, stage),
        ).fetchone()
        if row is None:
            return None
        qid, note, before, reviewed = row
        return qid, note or "", before if reviewed == stage else ""

    def mark_taken(self, qid: int, run_id: str) -> None:
        """A run acted on this decision: it can no longer be undone."""
        self.db.execute(
            "UPDATE review_queue SET taken_by = ? WHERE qid = ? AND taken_by IS NULL", (run_id, qid)
        )

    # -- the reviewer's side ----------------------------------------------------------------------

    def waiting(self, *, offset: int = 0, limit: int | None = None) -> list[Entry]:
        """Every output waiting for a person, in input order, with its item's input; or one
        page of them (``limit`` entries from ``offset``), so a page of a 5,000-item queue reads
        only its own."""
        page = (limit if limit is not None else -1, offset)
        rows = self.db.execute(
            _ENTRY + "WHERE q.state = 'waiting' ORDER BY q.idx, q.qid LIMIT ? OFFSET ?", page
        ).fetchall()
        entries = [_entry(row) for row in rows]
        for entry in entries:
            entry.input = self.item_input(entry)
        return entries

    def waiting_count(self) -> int:
        """How many outputs wait for a person."""
        (count,) = self.db.execute("SELECT COUNT(*) FROM review_queue WHERE state = 'waiting'").fetchone()
        return int(count)

    def next_waiting(self, qid: int) -> int | None:
        """The entry a reviewer goes on to after ``qid``: the first waiting one (in input order)
        queued after it, else the first other one still waiting; None when none is."""
        order = " ORDER BY idx, qid LIMIT 1"
        for condition in ("qid > ?", "qid != ?"):
            row = self.db.execute(
                f"SELECT qid FROM review_queue WHERE state = 'waiting' AND {condition}{order}", (qid,)
            ).fetchone()
            if row is not None:
                return int(row[0])
        return None

    def entries(self) -> list[Entry]:
        """Every entry but superseded ones, in input order (what a report counts)."""
        rows = self.db.execute(_ENTRY + "WHERE q.state != 'superseded' ORDER BY q.idx, q.qid").fetchall()
        return [_entry(row) for row in rows]

    def item_input(self, entry: Entry) -> dict[str, Any]:
        """The input fields of the item ``entry`` waits for (what a reviewer reads beside it)."""
        row = self.db.execute(
            "SELECT input FROM items WHERE run_id = ? AND idx = ?", (entry.run_id, entry.index)
        ).fetchone()
        data = json.loads(row[0]) if row else {}
        return data if isinstance(data, dict) else {}

    def get(self, qid: int) -> Entry | None:
        row = self.db.execute(_ENTRY + "WHERE q.qid = ?", (qid,)).fetchone()
        return _entry(row) if row else None

    def find_waiting(self, item_id: str) -> Entry:
        """The entry waiting for ``item_id``; ``ReviewError`` when it is unknown or not waiting."""
        row = self.db.execute(
            _ENTRY + "WHERE q.item_id = ? AND q.state = 'waiting' ORDER BY q.qid DESC LIMIT 1", (item_id,)
        ).fetchone()
        if row is not None:
            return _entry(row)
        last = self.db.execute(
            _ENTRY + "WHERE q.item_id = ? AND q.state != 'superseded' ORDER BY q.qid DESC LIMIT 1", (item_id,)
        ).fetchone()
        if last is None:
            raise ReviewError("no such item in the review queue", where=item_id)
        entry = _entry(last)
        assert entry.reviewer is not None and entry.decided is not None
        raise AlreadyDecided(item_id, entry.reviewer, entry.decided, entry.state)

    def decide(
        self,
        item_id: str,
        action: str,
        *,
        reviewer: str,
        note: str | None = None,
        after: str | None = None,
        from_stage: str | None = None,
        qid: int | None = None,
    ) -> Decision:
        """Decide the entry waiting for ``item_id`` (or exactly entry ``qid``: a page shown
        earlier). Atomic: if someone decided first, ``AlreadyDecided`` and nothing changes."""
        if action not in ACTIONS:
            raise ReviewError(f"unknown action {action!r} (approve, edit, reject)")
        entry = self.get(qid) if qid is not None else self.find_waiting(item_id)
        if entry is None or entry.item_id != item_id:
            raise ReviewError("no such item in the review queue", where=item_id)
        now = time.time()
        if self.db.in_transaction:
            self.db.commit()
        try:
            self.db.execute("BEGIN IMMEDIATE")
            cursor = self.db.execute(
                "INSERT INTO review_decisions (qid, item_id, stage, reviewer, decided, action, note, "
                "from_stage, before, after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.qid,
                    item_id,
                    entry.stage,
                    reviewer,
                    now,
                    action,
                    note,
                    (from_stage or entry.stage) if action == "reject" else None,
                    entry.output,
                    after,
                ),
            )
            did = int(cursor.lastrowid or 0)
            won = self.db.execute(
                "UPDATE review_queue SET state = ?, decision = ? WHERE qid = ? AND state = 'waiting'",
                (ACTIONS[action], did, entry.qid),
            ).rowcount
            if not won:
                self.db.rollback()
                self._raise_decided(entry.qid, item_id)
            kill_point("review-deciding")  # tests: killed before the decision is committed
            self.db.commit()
            kill_point("review-decided")  # tests: killed once it is
        except sqlite3.Error:
            self.db.rollback()
            raise
        found = self.decision(did)
        assert found is not None
        return found

    def _raise_decided(self, qid: int, item_id: str) -> None:
        entry = self.get(qid)
        if entry is None or entry.reviewer is None or entry.decided is None:
            raise ReviewError("this output is no longer waiting (the run went on)", where=item_id)
        raise AlreadyDecided(item_id, entry.reviewer, entry.decided, entry.state)

    def undo(self, did: int) -> Entry:
        """Take decision ``did`` back: its item waits again. Refused once a run acted on it."""
        decision = self.decision(did)
        if decision is None or decision.undone:
            raise ReviewError("no such decision to undo")
        if self.db.in_transaction:
            self.db.commit()
        self.db.execute("BEGIN IMMEDIATE")
        undone = self.db.execute(
            "UPDATE review_queue SET state = 'waiting', decision = NULL WHERE decision = ? "
            "AND taken_by IS NULL",
            (did,),
        ).rowcount
        if not undone:
            self.db.rollback()
            why = "a run already acted on this decision: it cannot be undone"
            raise ReviewError(why, where=decision.item_id)
        self.db.execute("UPDATE review_decisions SET undone = ? WHERE did = ?", (time.time(), did))
        self.db.commit()
        entry = self.find_waiting(decision.item_id)
        return entry

    def decision(self, did: int) -> Decision | None:
        row = self.db.execute(_DECISION + "WHERE did = ?", (did,)).fetchone()
        return Decision(*row) if row else None

    def decisions(self) -> Iterator[Decision]:
        """Every decision ever made here, oldest first (undone ones marked)."""
        for row in self.db.execute(_DECISION + "ORDER BY did").fetchall():
            yield Decision(*row)

    def has_entries(self) -> bool:
        """Whether anything was ever queued here (a run with no ``review:`` then skips it)."""
        return self.db.execute("SELECT 1 FROM review_queue LIMIT 1").fetchone() is not None

    def counts(self) -> dict[str, int]:
        """Entries by state: waiting, approved, edited, rejected."""
        counts = {state: 0 for state in ("waiting", "approved", "edited", "rejected")}
        for state, n in self.db.execute(
            "SELECT state, COUNT(*) FROM review_queue WHERE state != 'superseded' GROUP BY state"
        ):
            counts[state] = n
        return counts


_DECISION = (
    "SELECT did, item_id, stage, reviewer, decided, action, note, from_stage, before, after, undone "
    "FROM review_decisions "
)
