"""A run is the sum of its sessions: each process that worked on a run, in the run store.

A run keeps its id across ``chainfleet resume``; every process that works on it (the first
``run``, each ``resume``) is a *session*, a row of the ``sessions`` table (migration m007):
its number (1, 2, ...), start and end (seconds since the epoch), how it ended, and its counters
(calls, tokens, cost, service time, its own active time...). The counters are written with
every commit of the store, in the same transaction as the calls they count, so a session killed
by ``kill -9`` keeps the counters of everything it committed.

How a session ends:

- ``done``: the run ended (every item finished, failed for good, or waits for a person);
- ``interrupted``: Ctrl-C or SIGTERM (it saved what it had and said how to go on);
- ``stopped``: a fatal error, a budget or a broken input stopped admission;
- ``killed-unknown``: the process died without a word (``kill -9``, a crash, power): the next
  session finds it still open and closes it so, at the time of its last commit.

The report sums the sessions (see :mod:`chainfleet.report.build`): items, calls, tokens, cost
and service time over all of them; wall time is the sum of their active times (first admission
to last result of each), never the gaps between them.

Example::

    sessions = Sessions(store.db)
    number = sessions.begin("r1", pid=os.getpid())
    sessions.record("r1", number, {"calls": 3})
    sessions.end("r1", number, "done", {"calls": 4})
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from chainfleet.store.rows import decode_json_dict

__all__ = ["SESSION_STATES", "SessionRow", "Sessions"]

#: every way a session can end (``running`` while it goes)
SESSION_STATES = ("running", "done", "interrupted", "stopped", "killed-unknown")


@dataclass(frozen=True)
class SessionRow:
    """One session as stored; ``stats`` holds its counters (see ``Runner.session_stats``)."""

    run_id: str
    number: int
    started: float
    ended: float | None
    status: str
    pid: int | None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def active_seconds(self) -> float:
        """Its own first admission to last result (0 when it admitted nothing)."""
        return float(self.stats.get("wall_seconds") or 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The entry of report.json's ``sessions`` list."""
        s = self.stats
        return {
            "session": self.number,
            "started": round(self.started, 3),
            "ended": round(self.ended, 3) if self.ended is not None else None,
            "status": self.status,
            "active_seconds": round(self.active_seconds, 4),
            "calls": s.get("calls", 0),
            "calls_succeeded": s.get("calls_succeeded", 0),
            "tokens": {"input": s.get("input_tokens", 0), "output": s.get("output_tokens", 0)},
            "cost_usd": s.get("cost_usd"),
            "service_seconds": round(float(s.get("service_seconds", 0.0)), 4),
            "items_finished": s.get("done", 0),
            "reused_stage_results": s.get("reused", 0),
        }


class Sessions:
    """The ``sessions`` table of one store connection. Writes join the caller's transaction
    (the store commits them)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def begin(self, run_id: str, *, pid: int, now: float | None = None) -> int:
        """Open the next session of ``run_id`` and return its number. A session still open is
        one whose process died without a word: it is closed as ``killed-unknown``, at the time
        of its last commit."""
        self.close_dead(run_id)
        row = self.db.execute("SELECT MAX(session) FROM sessions WHERE run_id = ?", (run_id,)).fetchone()
        number = (row[0] or 0) + 1
        self.db.execute(
            "INSERT INTO sessions (run_id, session, started, ended, status, pid, stats) "
            "VALUES (?, ?, ?, NULL, 'running', ?, NULL)",
            (run_id, number, time.time() if now is None else now, pid),
        )
        return number

    def close_dead(self, run_id: str) -> None:
        """Close the run's sessions still open (their process died without a word) as
        ``killed-unknown``, at the time of their last commit. Only call it while no process
        runs the run: the next session does, and so does ``chainfleet report`` on a killed run."""
        self.db.execute(
            "UPDATE sessions SET status = 'killed-unknown', ended = COALESCE(ended, started) "
            "WHERE run_id = ? AND status = 'running'",
            (run_id,),
        )

    def record(self, run_id: str, number: int, stats: dict[str, Any], *, now: float | None = None) -> None:
        """Keep the session's counters so far (and the time, as its end should it die now)."""
        self.db.execute(
            "UPDATE sessions SET stats = ?, ended = ? WHERE run_id = ? AND session = ?",
            (json.dumps(stats, sort_keys=True), time.time() if now is None else now, run_id, number),
        )

    def end(self, run_id: str, number: int, status: str, stats: dict[str, Any]) -> None:
        """Close the session: how it ended, and its final counters."""
        if status not in SESSION_STATES:
            raise ValueError(f"unknown session status {status!r}")
        self.record(run_id, number, stats)
        self.db.execute(
            "UPDATE sessions SET status = ? WHERE run_id = ? AND session = ?", (status, run_id, number)
        )

    def of_run(self, run_id: str) -> list[SessionRow]:
        """Every session of ``run_id``, first to last."""
        rows = self.db.execute(
            "SELECT run_id, session, started, ended, status, pid, stats FROM sessions "
            "WHERE run_id = ? ORDER BY session",
            (run_id,),
        ).fetchall()
        return [SessionRow(r[0], r[1], r[2], r[3], r[4], r[5], decode_json_dict(r[6])) for r in rows]

    def item_calls_before(self, run_id: str, index: int, number: int) -> tuple[int, float]:
        """Attempts made for item ``index`` by sessions before ``number``, and their service
        seconds: what a resumed item already took."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(ended - started), 0) FROM calls "
            "WHERE run_id = ? AND idx = ? AND session < ?",
            (run_id, index, number),
        ).fetchone()
        return int(row[0]), float(row[1])

    def calls_end(self, run_id: str) -> float:
        """Where the run's timeline ends so far (seconds from its start): a new session's calls
        are drawn after it, not over the first session's."""
        row = self.db.execute("SELECT MAX(ended) FROM calls WHERE run_id = ?", (run_id,)).fetchone()
        return float(row[0] or 0.0)
