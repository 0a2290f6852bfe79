"""The run store: every finished stage result and item outcome, in SQLite.

The runner writes here as results arrive, so memory does not grow with the input: the output
folder's ``results.jsonl`` is read back from the store in input order at the end. Writes are
keyed by (run, item index, stage) and safe to repeat. The schema is built by numbered
migrations (``m001_...``, in :mod:`chainfleet.store.migrations`) applied on open, so later
versions can add to it and a store made by an earlier one still opens.

Commits are batched (every ``commit_every`` seconds and on :meth:`flush`): SQLite in WAL mode
with ``synchronous=NORMAL`` keeps a committed row across a killed process.

Example::

    with RunStore.open("out/run.db") as store:
        store.begin_run("r1", pipeline="content", settings={})
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields
from operator import attrgetter
from pathlib import Path
from typing import Any

from chainfleet.store.journal import Journal
from chainfleet.store.migrations import is_current, migrate, why_not_a_store
from chainfleet.store.rows import (
    CallRow,
    ItemRecord,
    RevisionRow,
    StageHit,
    add_try,
    decode_json_dict,
    decode_output,
    decode_revision,
)
from chainfleet.store.sessions import Sessions

__all__ = ["CallRow", "ItemRecord", "RevisionRow", "RunStore", "StageHit", "StoreError", "cannot_write"]

#: a CallRow's values in column order: ``dataclasses.astuple`` deep-copies every value, which
#: was a third of the run phase's CPU per call (issue 25)
_call_values = attrgetter(*(f.name for f in fields(CallRow)))

#: a stage result, by (run, item, stage); a called one replaces a row there, a reused one keeps
#: the attempts and seconds the row already has (the session that called it recorded them)
_STAGE_UPSERT = (
    "INSERT INTO stage_results "
    "(run_id, idx, stage, output, input_tokens, output_tokens, seconds, attempts, item_id, key, "
    "is_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, idx, stage) DO UPDATE SET output = excluded.output, "
    "input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, "
    "item_id = excluded.item_id, key = excluded.key, is_json = excluded.is_json, "
)
_STAGE_CALLED = _STAGE_UPSERT + "seconds = excluded.seconds, attempts = excluded.attempts"
_STAGE_REUSED = _STAGE_UPSERT + "seconds = seconds, attempts = attempts"


class StoreError(Exception):
    """The file is not a chainfleet run store (corrupt, foreign, or from a newer version)."""


#: pages of WAL (4 KiB each) between checkpoints, and what it is cut back to after one
WAL_PAGES = 2048


def cannot_write(path: Path) -> str | None:
    """Why ``path`` (a store) cannot be written, as a message says it; None when it can. SQLite
    needs the file and its folder (for the ``-wal`` and ``-shm`` files beside it)."""
    for target in (path, path.parent):
        if not os.access(target, os.W_OK):
            try:
                read_only_fs = bool(os.statvfs(target).f_flag & os.ST_RDONLY)
            except OSError:
                read_only_fs = False
            if read_only_fs:
                return "read-only: it is on a read-only file system (it can be read, not written)"
            return f"read-only: this user may read {target} but not write it"
    return None


class RunStore:
    """A SQLite file holding runs, item outcomes and stage results.

    ``RunStore.open("")`` is a private temporary file, deleted when closed (the Python API uses
    it when no output folder is given, so big runs do not hold every output in memory).
    """

    def __init__(self, db: sqlite3.Connection, *, commit_every: float = 0.25) -> None:
        self.db = db
        self.commit_every = commit_every
        self._last_commit = time.monotonic()
        self._group: asyncio.Future[None] | None = None
        self._calls: list[tuple[Any, ...]] = []
        self._stages: list[tuple[Any, ...]] = []  # called stage results not yet written
        #: False for a temporary or in-memory store, which no later run can resume from
        self.persistent = True
        #: why this store cannot be written (opened by :meth:`open_to_read`), or None
        self.read_only: str | None = None
        #: the session that writes here (every call row is tagged with it; see chainfleet.store.sessions)
        self.session = 1
        self.sessions = Sessions(db)
        #: the journal of code chains' calls and the item logs (see chainfleet.store.journal)
        self.journal = Journal(db)
        #: (run id, session, its counters now): kept with every commit, so a killed session
        #: leaves the counters of what it committed
        self.session_snapshot: Callable[[], tuple[str, int, dict[str, Any]]] | None = None

    @classmethod
    def open(cls, path: str | Path = "", **kwargs: Any) -> RunStore:
        """Open (creating or upgrading) a store. A file that is not one raises ``StoreError``
        and is left untouched."""
        db = sqlite3.connect(str(path))
        try:
            problem = why_not_a_store(db)
            if problem is not None:
                raise StoreError(problem)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # checkpoint every ~8 MB of WAL (each checkpoint syncs the file) and cut the WAL back
            # to 8 MB after one, so it never grows past that whatever the run's size; a 16 MB cache
            # (the run writes at the right edge of its B-trees: a larger cache held memory, issue 25)
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")
            db.execute("PRAGMA cache_size=-16384")
            migrate(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(f"not a chainfleet run store ({exc})") from exc
        except StoreError:
            db.close()
            raise
        store = cls(db, **kwargs)
        store.persistent = str(path) not in ("", ":memory:")
        return store

    @classmethod
    def open_to_read(cls, path: str | Path) -> RunStore:
        """Open a store for a command that only reads it (``runs``, ``review --list``): as
        :meth:`open` when it can be written; else read-only (SQLite's ``mode=ro``, and
        ``immutable`` when not even its ``-shm`` file can be made beside it), with
        :attr:`read_only` saying why it cannot be written. A read-only store made by an older
        chainfleet cannot be upgraded: ``StoreError`` says so."""
        path = Path(path)
        why = cannot_write(path)
        if why is None:
            return cls.open(path)
        db = None
        try:
            for flags in ("mode=ro", "mode=ro&immutable=1"):
                try:
                    db = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True)
                    problem = why_not_a_store(db)
                    break
                except sqlite3.OperationalError:  # no -shm file, and none can be made
                    if db is not None:
                        db.close()
                    db = None
            if db is None:
                raise StoreError(f"{why}, and it cannot be read either")
            if problem is None and not is_current(db):
                problem = f"{why}, and made by an older chainfleet: copy the folder somewhere writable"
            if problem is not None:
                raise StoreError(problem)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"not a chainfleet run store ({exc})") from exc
        except StoreError:
            if db is not None:
                db.close()
            raise
        store = cls(db)
        store.read_only = why
        return store

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._write_stages()
        self.db.commit()
        self.db.close()

    # -- writes -----------------------------------------------------------------------------------

    def begin_run(self, run_id: str, *, pipeline: str, settings: dict[str, Any]) -> None:
        """Start (or, on resume, go on with) a run: a run keeps its first start; its pipeline
        and settings are the latest session's; it is ``running`` again until it ends."""
        self.db.execute(
            "INSERT INTO runs (run_id, pipeline, started, settings) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET pipeline = excluded.pipeline, "
            "settings = excluded.settings, status = 'running'",
            (run_id, pipeline, time.time(), json.dumps(settings, sort_keys=True)),
        )
        self.flush()

    def begin_session(self, run_id: str, *, pid: int | None = None) -> int:
        """Open the next session of ``run_id`` (closing one a dead process left open) and tag
        every call written from now on with it."""
        self.session = self.sessions.begin(run_id, pid=os.getpid() if pid is None else pid)
        self.flush()
        return self.session

    def end_session(self, run_id: str, status: str, stats: dict[str, Any]) -> None:
        """Close this store's session: how it ended and its final counters."""
        self._write_calls()
        self.sessions.end(run_id, self.session, status, stats)
        self.session_snapshot = None
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
        item_id: str | None = None,
        key: str | None = None,
        durable: bool = True,
        is_json: bool = False,
        reused: bool = False,
    ) -> None:
        """Record one finished stage result; with ``durable`` it is committed before returning,
        so a killed run never loses a result it counted as done. ``is_json``: a structured
        output, written back as a JSON value. ``reused``: taken from the store or the cache,
        not called: a row already there keeps the attempts and seconds it really took."""
        row = (run_id, index, stage, output, input_tokens, output_tokens, seconds, attempts, item_id, key)
        if reused:  # rare: written at once, after the rows before it (the same row may be among them)
            self._write_stages()
            self.db.execute(_STAGE_REUSED, (*row, int(is_json)))
        else:  # written with the others at the next commit (one executemany): the group commit
            # a stage awaits writes it first, so it is still on disk before the chain goes on
            self._stages.append((*row, int(is_json)))
            if len(self._stages) >= 1000:
                self._write_stages()
        if durable:
            self.flush()
        else:
            self._maybe_commit()

    async def durable(self) -> None:
        """Return once everything written so far is committed.

        A group commit: every caller in the same turn of the event loop waits for one commit
        made on the next turn, so a thousand chains finishing together pay for one commit, not
        a thousand, and each result is still on disk before its chain goes on.
        """
        if not self.persistent:  # a temporary store vanishes with the process: nothing to
            self._write_stages()  # make durable, but the rows are there for a reader from now on
            return
        if self._group is None:
            loop = asyncio.get_running_loop()
            self._group = loop.create_future()
            loop.call_soon(self._commit_group)
        await asyncio.shield(self._group)

    def _commit_group(self) -> None:
        group, self._group = self._group, None
        try:
            self.flush()
        except sqlite3.Error as exc:  # every waiter learns of it
            if group is not None and not group.done():
                group.set_exception(exc)
            return
        if group is not None and not group.done():
            group.set_result(None)

    def save_call(self, run_id: str, row: CallRow) -> None:
        """Record one attempt. Rows are buffered and written together at the next commit: the
        timeline needs them, a resume does not."""
        self._calls.append((run_id, *_call_values(row), self.session))
        if len(self._calls) >= 1000:
            self._write_calls()
        self._maybe_commit()

    def _write_stages(self) -> None:
        if self._stages:
            self.db.executemany(_STAGE_CALLED, self._stages)
            self._stages.clear()

    def _write_calls(self) -> None:
        if self._calls:
            self.db.executemany(
                "INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self._calls
            )
            self._calls.clear()

    def find_stage(self, item_id: str, stage: str, key: str) -> StageHit | None:
        """A result of ``stage`` for ``item_id`` made from the same input (any run here)."""
        self._write_stages()
        row = self.db.execute(
            "SELECT output, input_tokens, output_tokens FROM stage_results "
            "WHERE item_id = ? AND stage = ? AND key = ? LIMIT 1",
            (item_id, stage, key),
        ).fetchone()
        return StageHit(*row) if row else None

    def save_revision(self, run_id: str, row: RevisionRow) -> None:
        """Record one try of a stage (repeating it replaces it); committed at the next commit."""
        self.db.execute(
            "INSERT OR REPLACE INTO revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                row.index,
                row.item_id,
                row.stage,
                row.revision,
                row.key,
                row.output,
                int(row.is_json),
                row.input_tokens,
                row.output_tokens,
                row.repairs,
                row.feedback,
                json.dumps(row.gates) if row.gates is not None else None,
                row.outcome,
            ),
        )
        self._maybe_commit()

    def set_gates(
        self,
        run_id: str,
        index: int,
        stage: str,
        revision: int,
        gates: list[dict[str, Any]],
        outcome: str | None,
    ) -> None:
        """Record a try's gate results (and, on its last try, the stage's outcome)."""
        self.db.execute(
            "UPDATE revisions SET gates = ?, outcome = ? WHERE run_id = ? AND idx = ? AND stage = ? "
            "AND revision = ?",
            (json.dumps(gates), outcome, run_id, index, stage, revision),
        )
        self._maybe_commit()

    def find_revision(
        self, item_id: str, stage: str, key: str, *, run_id: str | None = None
    ) -> RevisionRow | None:
        """A try of ``stage`` for ``item_id`` made from the same input: in run ``run_id``, or in
        any run here (resume)."""
        sql = (
            "SELECT idx, item_id, stage, revision, key, output, is_json, input_tokens, output_tokens, "
            "repairs, feedback, gates, outcome FROM revisions WHERE item_id = ? AND stage = ? AND key = ?"
        )
        args: tuple[Any, ...] = (item_id, stage, key)
        if run_id is not None:
            sql += " AND run_id = ?"
            args += (run_id,)
        row = self.db.execute(sql + " ORDER BY gates IS NULL LIMIT 1", args).fetchone()
        return decode_revision(row) if row else None

    def revisions(self, run_id: str) -> Iterator[RevisionRow]:
        """Every try of the run, by item, stage and revision."""
        self.flush()
        for row in self.db.execute(
            "SELECT idx, item_id, stage, revision, key, output, is_json, input_tokens, output_tokens, "
            "repairs, feedback, gates, outcome FROM revisions WHERE run_id = ? "
            "ORDER BY idx, stage, revision",
            (run_id,),
        ):
            yield decode_revision(row)

    def cache_get(self, key: str) -> StageHit | None:
        row = self.db.execute(
            "SELECT text, input_tokens, output_tokens FROM cache WHERE key = ?", (key,)
        ).fetchone()
        return StageHit(*row) if row else None

    def cache_put(self, key: str, hit: StageHit) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?, ?)",
            (key, hit.output, hit.input_tokens, hit.output_tokens, time.time()),
        )
        self._maybe_commit()

    def end_run(self, run_id: str, *, status: str, summary: dict[str, Any]) -> None:
        """Record how the run ended; its output folder is from now on ``writing`` (not written
        to its end) until :meth:`set_output` says ``written``, so a process killed between the
        two leaves a run that says its output is unfinished."""
        self.db.execute(
            "UPDATE runs SET status = ?, summary = ?, output = 'writing' WHERE run_id = ?",
            (status, json.dumps(summary, sort_keys=True), run_id),
        )
        self.flush()

    def set_output(self, run_id: str, state: str) -> None:
        """Record how far the output folder got: ``writing`` (interrupted, if it stays so) or
        ``written``."""
        self.db.execute("UPDATE runs SET output = ? WHERE run_id = ?", (state, run_id))
        self.flush()

    def save_item(self, run_id: str, record: ItemRecord) -> None:
        """Record an item's outcome. ``skipped`` (not finished in this session) never replaces
        an outcome an earlier session of the run recorded."""
        verb = "INSERT OR IGNORE" if record.status == "skipped" else "INSERT OR REPLACE"
        self.db.execute(
            f"{verb} INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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

    def save_skipped(
        self, run_id: str, items: Iterable[tuple[int, str, Mapping[str, Any]]], error: dict[str, Any]
    ) -> None:
        """Record items never admitted, as (index, id, fields), all with one ``error``: one
        statement for all of them, so a stopped million-item run lists its rest in seconds."""
        text = json.dumps(error)
        rows = (
            (run_id, index, ident, json.dumps(fields, ensure_ascii=False), "skipped", text, 0, 0.0)
            for index, ident, fields in items
        )
        # an item an earlier session of the run finished keeps its outcome
        self.db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
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
        self._write_stages()
        self._write_calls()
        if self.session_snapshot is not None:
            run_id, number, stats = self.session_snapshot()
            self.sessions.record(run_id, number, stats)
        self.db.commit()
        self._last_commit = time.monotonic()

    # -- reads ------------------------------------------------------------------------------------

    def calls(self, run_id: str) -> Iterator[CallRow]:
        """Every attempt of the run, by start time."""
        self.flush()
        for row in self.db.execute(
            "SELECT idx, item_id, stage, attempt, queued, started, ended, status, limiter_wait, "
            "cooldown_wait, backoff, input_tokens, output_tokens, error FROM calls "
            "WHERE run_id = ? ORDER BY started",
            (run_id,),
        ):
            yield CallRow(*row)

    def call_counts(self, run_id: str) -> dict[str, int]:
        """Attempts per stage label (``write``, ``write:judge``) in the run."""
        self.flush()
        rows = self.db.execute("SELECT stage, COUNT(*) FROM calls WHERE run_id = ? GROUP BY stage", (run_id,))
        return dict(rows.fetchall())

    def runs(self) -> list[dict[str, Any]]:
        """Every run in this store, oldest first, with its counts."""
        return self._runs("ORDER BY started", ())

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run of this store, as :meth:`runs` gives it (None: no such run)."""
        found = self._runs("WHERE run_id = ?", (run_id,))
        return found[0] if found else None

    def _runs(self, where: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        self.flush()
        found = []
        for run_id, pipeline, started, status, summary, settings, output in self.db.execute(
            "SELECT run_id, pipeline, started, status, summary, settings, output FROM runs " + where, args
        ).fetchall():
            counts = dict(
                self.db.execute(
                    "SELECT status, COUNT(*) FROM items WHERE run_id = ? GROUP BY status", (run_id,)
                ).fetchall()
            )
            found.append(
                {
                    "run_id": run_id,
                    "pipeline": pipeline,
                    "started": started,
                    "status": status,
                    "items": counts,
                    "summary": json.loads(summary) if summary else None,
                    "settings": decode_json_dict(settings),
                    "output": output,
                }
            )
        return found

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
            "SELECT idx, stage, output, is_json FROM stage_results WHERE run_id = ? ORDER BY idx, rowid",
            (run_id,),
        )
        pending = next(outputs, None)
        tries = iter(self.revisions(run_id))
        tried = next(tries, None)
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
                    record.outputs[pending[1]] = decode_output(pending[2], pending[3])
                pending = next(outputs, None)
            while tried is not None and tried.index <= idx:
                if tried.index == idx:
                    add_try(record.gates, tried)
                tried = next(tries, None)
            yield record
