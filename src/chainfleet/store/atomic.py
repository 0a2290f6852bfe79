"""All or nothing: a schema change made in one transaction, and the kill points that prove it.

The store creates and upgrades its schema in one transaction (see
:mod:`chainfleet.store.migrations`), so a process killed at any point leaves the file as it was.
Python's ``sqlite3`` works against that in one place: ``Connection.executescript`` commits the
open transaction before it runs the script. :class:`OneTransaction` wraps a connection so that a
migration can still be written as one script, run statement by statement inside the caller's
transaction.

:func:`kill_point` is the test hook that checks the promise: with
``CHAINFLEET_TEST_KILL_AT=migration-3`` in the environment, the process kills itself (SIGKILL,
as ``kill -9`` would) when it reaches the point named ``migration-3``; anywhere else, and in
every real run, it does nothing.

Example::

    db.execute("BEGIN IMMEDIATE")
    OneTransaction(db).executescript("CREATE TABLE a (x); CREATE TABLE b (y);")
    kill_point("between-the-tables-and-the-commit")
    db.commit()  # both tables, or (killed above) neither
"""

from __future__ import annotations

import os
import signal
import sqlite3
from typing import Any

__all__ = ["OneTransaction", "kill_point"]


class OneTransaction:
    """A connection whose ``executescript`` runs inside the caller's transaction (sqlite3's own
    commits first); everything else is the connection's."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def executescript(self, script: str) -> None:
        statement = ""
        for piece in script.split(";"):
            statement += piece + ";"
            if sqlite3.complete_statement(statement):
                if statement.strip(" \n\t;"):
                    self._db.execute(statement)
                statement = ""
        if statement.strip(" \n\t;"):
            self._db.execute(statement)


def kill_point(name: str) -> None:
    """Tests only: ``CHAINFLEET_TEST_KILL_AT=migration-1`` kills the process (SIGKILL) there."""
    if os.environ.get("CHAINFLEET_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
