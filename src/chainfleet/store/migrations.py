"""The run store's schema, built by numbered migrations applied on open.

A run store is a SQLite file whose ``PRAGMA user_version`` says how many of :data:`MIGRATIONS`
it has had: a new file has none (version 0), and :func:`migrate` applies those it misses, in
order, each followed by its version number. So a store made by any earlier chainfleet opens and
is brought up to date, and the file format is the list below, read top to bottom.

Two rules keep old files opening:

- **the list only grows at its end.** A migration's place in :data:`MIGRATIONS` is the version
  it makes (the sixth entry makes version 6); its name carries the issue that added it, which is
  why ``m003`` is missing and ``m004`` makes version 3. Reordering, removing or editing an
  applied migration would leave old files with a schema this code does not expect.
- **all or nothing.** Every missing migration and its version number are applied in one
  transaction: a process killed at any point (see :func:`~chainfleet.store.atomic.kill_point`,
  named ``migration-N``) leaves the store as it was, or no tables at all, never half made.

Before migrating, :func:`why_not_a_store` looks at the file: a SQLite file of another program,
or one made by a newer chainfleet, is refused and left untouched.

This follows ``migrations.py`` of simonw/llm: plain functions, numbered, applied on open.

Example::

    db = sqlite3.connect("out/run.db")
    if (problem := why_not_a_store(db)) is None:
        migrate(db)  # version(db) == len(MIGRATIONS) from here on
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from chainfleet.store.atomic import OneTransaction, kill_point

__all__ = [
    "MIGRATIONS",
    "is_current",
    "m001_initial",
    "m002_calls_keys_cache",
    "m004_contracts_gates",
    "m005_review",
    "m006_batches",
    "m007_sessions",
    "m008_journal",
    "m009_agent_turns",
    "m010_batch_tool_calls",
    "m011_agent_turn_times",
    "migrate",
    "version",
    "why_not_a_store",
]


def m001_initial(db: sqlite3.Connection) -> None:
    """Runs, their items' outcomes and quality scores, and every finished stage result."""
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


def m002_calls_keys_cache(db: sqlite3.Connection) -> None:
    """Every attempt of every call; stage results keyed by their input; a response cache."""
    db.executescript(
        """
        ALTER TABLE stage_results ADD COLUMN item_id TEXT;
        ALTER TABLE stage_results ADD COLUMN key TEXT;
        CREATE INDEX stage_results_by_key ON stage_results (item_id, stage, key);
        CREATE TABLE calls (
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            stage TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            queued REAL NOT NULL,
            started REAL NOT NULL,
            ended REAL NOT NULL,
            status TEXT NOT NULL,
            limiter_wait REAL NOT NULL DEFAULT 0,
            cooldown_wait REAL NOT NULL DEFAULT 0,
            backoff REAL NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            error TEXT
        );
        CREATE INDEX calls_by_run ON calls (run_id, started);
        CREATE TABLE cache (
            key TEXT PRIMARY KEY,
            text TEXT NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            created REAL NOT NULL
        );
        ALTER TABLE runs ADD COLUMN status TEXT NOT NULL DEFAULT 'running';
        ALTER TABLE runs ADD COLUMN summary TEXT;
        """
    )


def m004_contracts_gates(db: sqlite3.Connection) -> None:
    """Structured outputs flagged as JSON; every try of a gated or contracted stage (its output,
    repairs, gate results and the feedback it was given), so a resume continues a revision loop.

    Creates only its own table and column (each only if missing), so it depends on no migration
    but m001.
    """
    columns = {row[1] for row in db.execute("PRAGMA table_info(stage_results)")}
    if "is_json" not in columns:
        db.execute("ALTER TABLE stage_results ADD COLUMN is_json INTEGER NOT NULL DEFAULT 0")
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS revisions (
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            stage TEXT NOT NULL,
            revision INTEGER NOT NULL,
            key TEXT,
            output TEXT NOT NULL,
            is_json INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            repairs INTEGER NOT NULL DEFAULT 0,
            feedback TEXT NOT NULL DEFAULT '',
            gates TEXT,
            outcome TEXT,
            PRIMARY KEY (run_id, idx, stage, revision)
        );
        CREATE INDEX IF NOT EXISTS revisions_by_key ON revisions (item_id, stage, key);
        """
    )


def m005_review(db: sqlite3.Connection) -> None:
    """The review queue and the decisions made on it (issue 10), kept by
    :mod:`chainfleet.store.review_queue`. Creates only its own tables, so it depends on no other
    migration."""
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS review_queue (
            qid INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            stage TEXT NOT NULL,
            reason TEXT NOT NULL,
            output TEXT NOT NULL,
            checks TEXT,
            quality REAL,
            queued REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'waiting',
            decision INTEGER,
            taken_by TEXT
        );
        CREATE INDEX IF NOT EXISTS review_queue_by_item ON review_queue (item_id, stage, state);
        CREATE TABLE IF NOT EXISTS review_decisions (
            did INTEGER PRIMARY KEY AUTOINCREMENT,
            qid INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            stage TEXT NOT NULL,
            reviewer TEXT NOT NULL,
            decided REAL NOT NULL,
            action TEXT NOT NULL,
            note TEXT,
            from_stage TEXT,
            before TEXT NOT NULL,
            after TEXT,
            undone REAL
        );
        """
    )


def m006_batches(db: sqlite3.Connection) -> None:
    """Batch mode: every chunk (its provider batch and file ids, state, times) and its requests
    (membership, state, and a finished request's result), so a resume polls instead of
    submitting again (kept by :mod:`chainfleet.store.batch_ledger`). Its own tables only, so it
    depends on no other migration."""
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS batch_chunks (
            chunk_id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            spec TEXT NOT NULL,
            state TEXT NOT NULL,
            file_id TEXT,
            batch_id TEXT,
            requests INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            created REAL NOT NULL,
            submitted REAL,
            ended REAL,
            counts TEXT,
            error TEXT
        );
        CREATE TABLE IF NOT EXISTS batch_requests (
            chunk_id TEXT NOT NULL,
            custom_id TEXT NOT NULL,
            state TEXT NOT NULL,
            output TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            PRIMARY KEY (chunk_id, custom_id)
        );
        CREATE INDEX IF NOT EXISTS batch_requests_by_id ON batch_requests (custom_id);
        """
    )


def m007_sessions(db: sqlite3.Connection) -> None:
    """Sessions: every process that worked on a run; each call tagged with its session, and
    an index to sum an item's calls over the sessions before this one (resume); and whether
    the run's output folder was written to its end (``runs.output``: writing, written). Kept by
    :mod:`chainfleet.store.sessions`."""
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS sessions (
            run_id TEXT NOT NULL,
            session INTEGER NOT NULL,
            started REAL NOT NULL,
            ended REAL,
            status TEXT NOT NULL,
            pid INTEGER,
            stats TEXT,
            PRIMARY KEY (run_id, session)
        );
        ALTER TABLE calls ADD COLUMN session INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE runs ADD COLUMN output TEXT;
        CREATE INDEX IF NOT EXISTS calls_by_item ON calls (run_id, idx);
        """
    )


def m008_journal(db: sqlite3.Connection) -> None:
    """The journal of the user's own chains (issue 20): every model call (and ``fleet.step``)
    made on behalf of an item, keyed by the item, the hash of the canonical request and how
    many times that same request occurred earlier in the item's run, so a run that goes again
    answers it from here; and each item's log (a traceback, a child's stderr). Kept by
    :mod:`chainfleet.store.journal`."""
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS journal (
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            hash TEXT NOT NULL,
            occurrence INTEGER NOT NULL,
            kind TEXT NOT NULL,
            status INTEGER NOT NULL,
            headers TEXT NOT NULL,
            body BLOB NOT NULL,
            stage TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            saved REAL NOT NULL,
            PRIMARY KEY (run_id, idx, hash, occurrence)
        );
        CREATE TABLE IF NOT EXISTS item_logs (
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            written REAL NOT NULL,
            text TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS item_logs_by_item ON item_logs (run_id, idx);
        """
    )


def m009_agent_turns(db: sqlite3.Connection) -> None:
    """Agents (issue 21): every step of an agent's conversation as it completes, a model turn
    (the assistant's message with its tool calls) or one tool's result, so a resumed item
    continues at the turn where it stopped and no finished tool call is made again (kept by
    :mod:`chainfleet.store.agent_turns`). Its own table only."""
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS agent_turns (
            run_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            item_id TEXT NOT NULL,
            stage TEXT NOT NULL,
            key TEXT NOT NULL,
            seq INTEGER NOT NULL,
            turn INTEGER NOT NULL,
            role TEXT NOT NULL,
            message TEXT NOT NULL,
            tool TEXT,
            is_error INTEGER NOT NULL DEFAULT 0,
            seconds REAL NOT NULL DEFAULT 0,
            waited REAL NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, item_id, stage, key, seq)
        );
        CREATE INDEX IF NOT EXISTS agent_turns_by_key ON agent_turns (item_id, stage, key);
        """
    )


def m010_batch_tool_calls(db: sqlite3.Connection) -> None:
    """Agents in batch mode (issue 21): a batch result's tool calls (JSON, null for none), so a
    turn a batch answered that a killed run never stored is read back whole on resume."""
    db.execute("ALTER TABLE batch_requests ADD COLUMN tool_calls TEXT")
def m011_agent_turn_times(db: sqlite3.Connection) -> None:
    """When each agent tool call ended (seconds since the run started, as the calls table
    times model calls), so the timeline draws tool calls as their own bars. Rows written before
    have none (NULL) and are not drawn."""
    db.execute("ALTER TABLE agent_turns ADD COLUMN ended REAL")


#: every migration, in the order applied: an entry's place (from 1) is the version it makes
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    m001_initial,
    m002_calls_keys_cache,
    m004_contracts_gates,
    m005_review,
    m006_batches,
    m007_sessions,
    m008_journal,
    m009_agent_turns,
    m010_batch_tool_calls,
    m011_agent_turn_times,
]


def version(db: sqlite3.Connection) -> int:
    """How many migrations the file has had (0: a new file, or not a run store)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def why_not_a_store(db: sqlite3.Connection) -> str | None:
    """Why ``db`` is not a run store this version can open (None: it is one, or a new file)."""
    number = version(db)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if number == 0 and tables:
        return f"a SQLite file with other tables ({', '.join(sorted(tables)[:3])}...)"
    if number > len(MIGRATIONS):
        return f"made by a newer chainfleet (store version {number})"
    if number and "runs" not in tables:
        return "a SQLite file of another program"
    return None


def is_current(db: sqlite3.Connection) -> bool:
    """Whether ``db`` has every migration of this version (nothing to upgrade)."""
    return version(db) == len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> None:
    """Apply the missing migrations and their version numbers in one transaction: a process
    killed at any point leaves the store as it was (or no tables at all), never half-made.
    (``executescript`` would commit first, so migrations' scripts run statement by statement.)
    """
    start = version(db)
    if start == len(MIGRATIONS):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        scripted = OneTransaction(db)
        for number, migration in enumerate(MIGRATIONS[start:], start=start + 1):
            migration(scripted)  # type: ignore[arg-type]
            db.execute(f"PRAGMA user_version = {number}")
            kill_point(f"migration-{number}")
        db.commit()
    except BaseException:
        db.rollback()
        raise
