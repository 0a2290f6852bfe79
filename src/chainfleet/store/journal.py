"""The journal of the user's own chains: every call made for an item, kept as it completes.

A chain written as code (``chainfleet run my_chain.py:article``, or ``chainfleet exec``) runs
from the top each time its item runs again: in the retry pass, on ``chainfleet resume`` after a
crash, after a review. Every model call it makes, and every ``fleet.step`` side effect, is
written here as it completes, keyed by

- the run and the item (its index in the input),
- ``hash``: the hash of the canonical request (method, path, JSON body with sorted keys), or
  of a step's name and arguments,
- ``occurrence``: how many times the same hash occurred earlier in this run of the item, so a
  chain that asks the same question twice gets both answers back in order.

So when the item runs again, each call whose key is here is answered from the store at once
(``replayed``: no provider, no cost), and the first one that is not goes out for real. A chain
whose path changed simply misses: a miss is a new call, never a wrong answer.

An entry keeps what the caller needs to be answered again exactly: the HTTP status, the
response headers that matter (content type, request id, rate-limit headers), the body bytes
(for ``stream=True`` the whole server-sent event stream), the stage label and the tokens.

Beside it, each item's log (``item_logs``): the traceback of the user's code, a child
process's stderr, appended as it comes and written to ``logs/`` in the output folder.

Example::

    journal = Journal(store.db)
    journal.put("r1", 0, JournalEntry(hash="ab12", occurrence=0, kind="http", status=200,
                                      headers={"content-type": "application/json"}, body=b"{}"))
    journal.get("r1", 0, "ab12", 0)
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Journal", "JournalEntry"]


@dataclass(frozen=True)
class JournalEntry:
    """One journaled call or step of one item."""

    hash: str
    occurrence: int
    #: "http" (a model call: status, headers, body) or "step" (``fleet.step``: a JSON body)
    kind: str
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    stage: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class Journal:
    """The journal and the item logs, on one run store's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, run_id: str, index: int, digest: str, occurrence: int) -> JournalEntry | None:
        """The entry of this key, if one was kept."""
        row = self.db.execute(
            "SELECT hash, occurrence, kind, status, body, headers, stage, input_tokens, output_tokens "
            "FROM journal WHERE run_id = ? AND idx = ? AND hash = ? AND occurrence = ?",
            (run_id, index, digest, occurrence),
        ).fetchone()
        return None if row is None else _entry(row)

    def put(self, run_id: str, index: int, entry: JournalEntry) -> None:
        """Keep one entry (the same key again replaces it); committed with the store's next
        commit (the caller makes it durable before it answers)."""
        self.db.execute(
            "INSERT OR REPLACE INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                index,
                entry.hash,
                entry.occurrence,
                entry.kind,
                entry.status,
                json.dumps(entry.headers, sort_keys=True),
                entry.body,
                entry.stage,
                entry.input_tokens,
                entry.output_tokens,
                time.time(),
            ),
        )

    def item_entries(self, run_id: str, index: int) -> list[JournalEntry]:
        """Every entry kept for one item (what a Ray worker answers its calls from)."""
        rows = self.db.execute(
            "SELECT hash, occurrence, kind, status, body, headers, stage, input_tokens, output_tokens "
            "FROM journal WHERE run_id = ? AND idx = ?",
            (run_id, index),
        ).fetchall()
        return [_entry(row) for row in rows]

    def count(self, run_id: str, index: int | None = None) -> int:
        """Entries kept for the run (or one item of it)."""
        sql = "SELECT COUNT(*) FROM journal WHERE run_id = ?"
        args: list[Any] = [run_id]
        if index is not None:
            sql += " AND idx = ?"
            args.append(index)
        return int(self.db.execute(sql, args).fetchone()[0])

    def entries(self, run_id: str) -> Iterator[tuple[int, JournalEntry]]:
        """Every entry of the run as (item index, entry), by item and time kept."""
        for row in self.db.execute(
            "SELECT idx, hash, occurrence, kind, status, body, headers, stage, input_tokens, "
            "output_tokens FROM journal WHERE run_id = ? ORDER BY idx, saved",
            (run_id,),
        ).fetchall():
            yield row[0], _entry(row[1:])

    # -- item logs ---------------------------------------------------------------------------------

    def log(self, run_id: str, index: int, item_id: str, text: str) -> None:
        """Append ``text`` to the item's log."""
        self.db.execute(
            "INSERT INTO item_logs VALUES (?, ?, ?, ?, ?)", (run_id, index, item_id, time.time(), text)
        )

    def logs(self, run_id: str) -> Iterator[tuple[str, str]]:
        """Each item's whole log as (item id, text), in input order."""
        rows = self.db.execute(
            "SELECT item_id, text FROM item_logs WHERE run_id = ? ORDER BY idx, rowid", (run_id,)
        ).fetchall()
        current, parts = None, []
        for item_id, text in rows:
            if current is not None and item_id != current:
                yield current, "".join(parts)
                parts = []
            current = item_id
            parts.append(text if text.endswith("\n") else text + "\n")
        if current is not None:
            yield current, "".join(parts)


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    """An entry from its columns (hash, occurrence, kind, status, body, headers, stage, tokens)."""
    digest, occurrence, kind, status, body, headers, stage, tokens_in, tokens_out = row
    return JournalEntry(
        hash=digest,
        occurrence=occurrence,
        kind=kind,
        status=status,
        body=bytes(body),
        headers=json.loads(headers),
        stage=stage,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
    )
