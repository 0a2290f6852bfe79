"""An agent's conversation, step by step, in the run store (the table of migration m009).

An agent stage calls its model, runs the tools it asked for, and calls it again. What it was
first sent (system and user prompt) is one row of role ``opening`` (seq -1). Each step is a
row written as it completes: a model turn (the assistant's message, with its tool calls and
tokens) or one tool's result (with its tool, error flag and seconds). Rows are keyed by the
item, the stage and the key of the stage's input (so a revision, whose input differs, has a
conversation of its own) and numbered in order (``seq``).

A resumed or retried item reads its rows back (:meth:`AgentTurns.load`) and continues where it
stopped: a model turn found here is not asked again, a tool result found here is not made
again. The rows are the item's trajectory too: results.jsonl and the report read them
(:meth:`AgentTurns.of_run`).

Example::

    turns = AgentTurns(store)
    turns.save("run1", TurnRow(0, "item-1", "research", key, seq=0, turn=1, role="assistant",
                               message={"role": "assistant", "content": "", "tool_calls": [...]}))
    await store.durable()
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from chainfleet.store.runstore import RunStore

__all__ = ["OPENING", "AgentTurns", "TurnRow"]

#: the role of the row (``seq`` -1) that keeps what an agent was first sent, ``{"role":
#: "opening", "messages": [...]}`` (system and user prompt): shown in report.html's trajectory
#: view; never replayed (the stage renders its prompt again) and not part of the trajectory
OPENING = "opening"


@dataclass(frozen=True, kw_only=True)
class TurnRow:
    """One step of an agent's conversation: a model turn or a tool result."""

    index: int
    item_id: str
    stage: str
    key: str
    seq: int
    turn: int
    role: str
    message: Mapping[str, Any]
    tool: str | None = None
    is_error: bool = False
    seconds: float = 0.0
    #: a tool call's wait for its own limits (concurrency, rpm) before it ran
    waited: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    #: a tool call's end, seconds since the run started (the calls table's time base); None
    #: for model turns and for rows of stores made before it was kept
    ended: float | None = None


_COLUMNS = (
    "idx, item_id, stage, key, seq, turn, role, message, tool, is_error, seconds, waited, "
    "input_tokens, output_tokens, ended"
)


def _decode(row: tuple[Any, ...]) -> TurnRow:
    index, item_id, stage, key, seq, turn, role, message, tool, is_error = row[:10]
    seconds, waited, tokens_in, tokens_out, ended = row[10:]
    return TurnRow(
        index=index,
        item_id=item_id,
        stage=stage,
        key=key,
        seq=seq,
        turn=turn,
        role=role,
        message=json.loads(message),
        tool=tool,
        is_error=bool(is_error),
        seconds=seconds,
        waited=waited,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        ended=ended,
    )


class AgentTurns:
    """The agent turns of a :class:`~chainfleet.store.runstore.RunStore`."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def save(self, run_id: str, row: TurnRow) -> None:
        """Record one step (repeating it replaces it); committed at the store's next commit
        (``await store.durable()`` before acting on it)."""
        self.store.db.execute(
            f"INSERT OR REPLACE INTO agent_turns (run_id, {_COLUMNS}) VALUES ({', '.join('?' * 16)})",
            (
                run_id,
                row.index,
                row.item_id,
                row.stage,
                row.key,
                row.seq,
                row.turn,
                row.role,
                json.dumps(row.message, ensure_ascii=False, default=str),
                row.tool,
                int(row.is_error),
                row.seconds,
                row.waited,
                row.input_tokens,
                row.output_tokens,
                row.ended,
            ),
        )

    def load(self, item_id: str, stage: str, key: str, run_id: str | None = None) -> list[TurnRow]:
        """The steps stored for this input, in order: of run ``run_id``, or (``None``) of the
        latest run here that has any (a resume of an earlier run)."""
        db = self.store.db
        if run_id is None:
            found = db.execute(
                "SELECT run_id FROM agent_turns WHERE item_id = ? AND stage = ? AND key = ? "
                "ORDER BY rowid DESC LIMIT 1",
                (item_id, stage, key),
            ).fetchone()
            if found is None:
                return []
            run_id = found[0]
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM agent_turns WHERE run_id = ? AND item_id = ? AND stage = ? AND key = ? "
            "ORDER BY seq",
            (run_id, item_id, stage, key),
        )
        return [_decode(row) for row in rows]

    def of_run(self, run_id: str) -> Iterator[TurnRow]:
        """Every step of the run, by item, stage, conversation and order."""
        self.store.flush()
        rows = self.store.db.execute(
            f"SELECT {_COLUMNS} FROM agent_turns WHERE run_id = ? ORDER BY idx, stage, key, seq", (run_id,)
        )
        for row in rows:
            yield _decode(row)
