"""The run store: every finished stage result and item outcome, in SQLite.

The runner writes here as results arrive, so memory does not grow with the input: the output
folder's ``results.jsonl`` is read back from the store in input order at the end. Writes are
keyed by (run, item index, stage) and safe to repeat. The schema is built by numbered
migrations (``m001_...``) applied on open, so later versions can add to it.

Commits are batched (every ``commit_every`` seconds and on :meth:`flush`): SQLite in WAL mode
with ``synchronous=NORMAL`` keeps a committed row across a killed process.

Example::

    with RunStore.open("out/run.db") as store:
        store.begin_run("r1", pipeline="content", settings={})
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ItemRecord", "RunStore"]


def m001_initial(db: sqlite3.Connection) -> None:
    db.executescript(
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            pipeline TEXT NOT NULL,
            started REAL NOT NULL,
            settings TEXT NOT NULL
        );
        CREATE TABLE items (
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            id TEXT NOT NULL,
            input TEXT NOT NULL,
            status TEXT NOT NULL,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            seconds REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, idx)
        );
        CREATE TABLE quality (
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (run_id, idx)
        );
        CREATE TABLE stage_results (
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            stage TEXT NOT NULL,
            output TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            seconds REAL NOT NULL,
            attempts INTEGER NOT NULL,
            PRIMARY KEY (run_id, idx, stage)
        );
        """
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial]


@dataclass
class ItemRecord:
    """One item's outcome as stored: what ``results.jsonl`` holds for it."""

    index: int
    id: str
    input: dict[str, Any]
    status: str
    outputs: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    attempts: int = 0
    seconds: float = 0.0
    quality: dict[str, Any] | None = None

    def to_json(self, final_stage: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "input": self.input,
            "status": self.status,
            "outputs": self.outputs,
            "output": self.outputs.get(final_stage) if final_stage else None,
            "error": self.error,
            "attempts": self.attempts,
            "seconds": round(self.seconds, 6),
            "quality": self.quality,
        }


class RunStore:
    """A SQLite file holding runs, item outcomes and stage results.

    ``RunStore.open("")`` is a private temporary file, deleted when closed (the Python API uses
    it when no output folder is given, so big runs do not hold every output in memory).
    """

    def __init__(self, db: sqlite3.Connection, *, commit_every: float = 0.25) -> None:
        self.db = db
        self.commit_every = commit_every
        self._last_commit = time.monotonic()

    @classmethod
    def open(cls, path: str | Path = "", **kwargs: Any) -> RunStore:
        db = sqlite3.connect(str(path))
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        cls._migrate(db)
        return cls(db, **kwargs)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            migration(db)
            db.execute(f"PRAGMA user_version = {number}")
        db.commit()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.commit()
        self.db.close()

    # -- writes -----------------------------------------------------------------------------------

    def begin_run(self, run_id: str, *, pipeline: str, settings: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?)",
            (run_id, pipeline, time.time(), json.dumps(settings, sort_keys=True)),
        )
        self.flush()

    def save_stage(
        self,
        run_id: str,
        index: int,
        stage: str,
        output: str,
        *,
        input_tokens: int,
        output_tokens: int,
        seconds: float,
        attempts: int,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO stage_results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, index, stage, output, input_tokens, output_tokens, seconds, attempts),
        )
        self._maybe_commit()

    def save_item(self, run_id: str, record: ItemRecord) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                record.index,
                record.id,
                json.dumps(record.input, ensure_ascii=False),
                record.status,
                json.dumps(record.error) if record.error else None,
                record.attempts,
                record.seconds,
            ),
        )
        self._maybe_commit()

    def save_quality(self, run_id: str, rows: list[tuple[int, dict[str, Any]]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO quality VALUES (?, ?, ?)",
            [(run_id, index, json.dumps(data)) for index, data in rows],
        )
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        now = time.monotonic()
        if now - self._last_commit >= self.commit_every:
            self.flush()

    def flush(self) -> None:
        self.db.commit()
        self._last_commit = time.monotonic()

    # -- reads ------------------------------------------------------------------------------------

    def items(self, run_id: str) -> Iterator[ItemRecord]:
        """Every item of the run in input order, with its stage outputs."""
        self.flush()
        rows = self.db.execute(
            "SELECT i.idx, i.id, i.input, i.status, i.error, i.attempts, i.seconds, q.data "
            "FROM items i LEFT JOIN quality q ON q.run_id = i.run_id AND q.idx = i.idx "
            "WHERE i.run_id = ? ORDER BY i.idx",
            (run_id,),
        )
        outputs = self.db.execute(
            "SELECT idx, stage, output FROM stage_results WHERE run_id = ? ORDER BY idx, rowid",
            (run_id,),
        )
        pending = next(outputs, None)
        for idx, id_, input_, status, error, attempts, seconds, quality in rows:
            record = ItemRecord(
                index=idx,
                id=id_,
                input=json.loads(input_),
                status=status,
                error=json.loads(error) if error else None,
                attempts=attempts,
                seconds=seconds,
                quality=json.loads(quality) if quality else None,
            )
            while pending is not None and pending[0] <= idx:
                if pending[0] == idx:
                    record.outputs[pending[1]] = pending[2]
                pending = next(outputs, None)
            yield record
