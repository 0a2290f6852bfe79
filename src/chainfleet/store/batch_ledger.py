"""The batch ledger: what batch mode keeps in the run store (tables of migration m006).

Each step of a chunk's life is written before the next one is taken: the chunk and its
membership (``preparing``), its uploaded file (``uploaded``), the provider's batch id
(``submitted``), and, once the job ended, every request's outcome (``ended``; ``failed`` when the
job ended without results). A resumed run asks :meth:`BatchLedger.latest` about a request before
queueing it: a request in a submitted chunk is polled for, not submitted again, and a request
that already succeeded is answered from here. The ledger knows nothing of providers: it stores
ids, states and texts.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chainfleet.store.runstore import RunStore

__all__ = ["BatchLedger", "LedgerEntry", "RequestResult"]

#: chunk states, in order
PREPARING, UPLOADED, SUBMITTED, ENDED, FAILED = "preparing", "uploaded", "submitted", "ended", "failed"


@dataclass(frozen=True)
class LedgerEntry:
    """The latest word on one request: its chunk, the chunk's state and batch, its own state."""

    chunk_id: str
    chunk_state: str
    batch_id: str | None
    state: str
    output: str | None
    input_tokens: int
    output_tokens: int
    error: str | None
    #: the tool calls of a succeeded agent turn, as JSON (None: none)
    tool_calls: str | None = None


@dataclass(frozen=True)
class RequestResult:
    """A request's outcome as stored: "succeeded" (with its text) or "errored" / "expired"."""

    state: str
    output: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None
    #: an agent turn's tool calls, as JSON (None: none)
    tool_calls: str | None = None


class BatchLedger:
    """Batch chunks and their requests in a :class:`~chainfleet.store.runstore.RunStore`."""

    def __init__(self, store: RunStore, run_id: str) -> None:
        self.store = store
        self.db = store.db
        self.run_id = run_id

    def new_chunk(self, spec: str, custom_ids: list[str], size: int) -> str:
        """Record a chunk about to be sent, with its membership; committed before returning."""
        chunk_id = f"c{int(time.time())}{secrets.token_hex(4)}"
        self.db.execute(
            "INSERT INTO batch_chunks (chunk_id, run_id, spec, state, requests, bytes, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (chunk_id, self.run_id, spec, PREPARING, len(custom_ids), size, time.time()),
        )
        self.db.executemany(
            "INSERT INTO batch_requests (chunk_id, custom_id, state) VALUES (?, ?, 'pending')",
            [(chunk_id, custom_id) for custom_id in custom_ids],
        )
        self.store.flush()
        return chunk_id

    def uploaded(self, chunk_id: str, file_id: str) -> None:
        self.db.execute(
            "UPDATE batch_chunks SET state = ?, file_id = ? WHERE chunk_id = ?", (UPLOADED, file_id, chunk_id)
        )
        self.store.flush()

    def submitted(self, chunk_id: str, batch_id: str) -> None:
        self.db.execute(
            "UPDATE batch_chunks SET state = ?, batch_id = ?, submitted = ? WHERE chunk_id = ?",
            (SUBMITTED, batch_id, time.time(), chunk_id),
        )
        self.db.execute("UPDATE batch_requests SET state = 'submitted' WHERE chunk_id = ?", (chunk_id,))
        self.store.flush()

    def polled(self, chunk_id: str, state: str, counts: Mapping[str, int]) -> None:
        self.db.execute(
            "UPDATE batch_chunks SET counts = ? WHERE chunk_id = ?",
            (json.dumps({"state": state, **counts}), chunk_id),
        )

    def not_sent(self, chunk_id: str, error: str) -> None:
        """The chunk never became a batch (its submission failed): its requests are free again."""
        self.db.execute(
            "UPDATE batch_chunks SET state = ?, error = ?, ended = ? WHERE chunk_id = ?",
            (FAILED, error, time.time(), chunk_id),
        )
        self.db.execute(
            "UPDATE batch_requests SET state = 'errored', error = ? WHERE chunk_id = ?", (error, chunk_id)
        )
        self.store.flush()

    def ended(
        self, chunk_id: str, results: Mapping[str, RequestResult], *, failed: bool, error: str | None
    ) -> None:
        """The job ended: every member's outcome (members without one expired); committed."""
        rows = [
            (r.state, r.output, r.input_tokens, r.output_tokens, r.error, r.tool_calls, chunk_id, custom_id)
            for custom_id, r in results.items()
        ]
        self.db.executemany(
            "UPDATE batch_requests SET state = ?, output = ?, input_tokens = ?, output_tokens = ?, "
            "error = ?, tool_calls = ? WHERE chunk_id = ? AND custom_id = ?",
            rows,
        )
        self.db.execute(
            "UPDATE batch_requests SET state = 'expired', error = ? "
            "WHERE chunk_id = ? AND state = 'submitted'",
            (error or "no result for this request: the batch ended without it", chunk_id),
        )
        self.db.execute(
            "UPDATE batch_chunks SET state = ?, ended = ?, error = ? WHERE chunk_id = ?",
            (FAILED if failed else ENDED, time.time(), error, chunk_id),
        )
        self.store.flush()

    def latest(self, custom_id: str) -> LedgerEntry | None:
        """The newest chunk holding ``custom_id`` (any run in this store) and its state there."""
        row = self.db.execute(
            "SELECT r.chunk_id, c.state, c.batch_id, r.state, r.output, r.input_tokens, r.output_tokens, "
            "r.error, r.tool_calls FROM batch_requests r JOIN batch_chunks c ON c.chunk_id = r.chunk_id "
            "WHERE r.custom_id = ? ORDER BY c.created DESC, c.rowid DESC LIMIT 1",
            (custom_id,),
        ).fetchone()
        return LedgerEntry(*row) if row else None

    def chunk(self, chunk_id: str) -> dict[str, Any]:
        row = self.db.execute(
            "SELECT chunk_id, spec, state, file_id, batch_id, requests, created FROM batch_chunks "
            "WHERE chunk_id = ?",
            (chunk_id,),
        ).fetchone()
        keys = ("chunk_id", "spec", "state", "file_id", "batch_id", "requests", "created")
        return dict(zip(keys, row, strict=True)) if row else {}

    def members(self, chunk_id: str) -> Iterable[str]:
        return [
            r[0]
            for r in self.db.execute("SELECT custom_id FROM batch_requests WHERE chunk_id = ?", (chunk_id,))
        ]
