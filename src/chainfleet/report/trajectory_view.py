"""report.html's trajectory view: a few items' agent conversations, as a person reads them.

For each agent stage of a chosen item: what the agent was sent (system and user prompt), each
model turn's text and tool calls with their arguments, each tool's result (an error marked),
and the final answer, every text clipped to ``chars`` (results.jsonl and the store hold more).
The items chosen are the first ``first`` items an agent worked on, plus the first that failed
and the first that succeeded when those are further on (looked for among the first ``scan``
items, so a huge run is not read to its end). The page shows each in a ``<details>`` block: the
first one open, the others a click away, with no script.

Everything here is data for the template, which escapes it: a tool's result is untrusted text
(a web page's ``<script>`` is shown, never run).

Example::

    views = trajectory_views(store, run_id, store.items(run_id))
    views[0]["stages"][0]["steps"][0]  # {"kind": "system", "text": "You are careful."}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from chainfleet.redact import clip
from chainfleet.report.agents import conversations
from chainfleet.store.agent_turns import OPENING, TurnRow
from chainfleet.store.rows import ItemRecord
from chainfleet.store.runstore import RunStore

__all__ = ["VIEW_CHARS", "trajectory_views"]

#: how long a text of the view may be
VIEW_CHARS = 1200


def trajectory_views(
    store: RunStore,
    run_id: str,
    records: Iterable[ItemRecord],
    *,
    first: int = 5,
    chars: int = VIEW_CHARS,
    scan: int = 5000,
) -> list[dict[str, Any]]:
    """The chosen items' conversations (see the module docstring), in input order."""
    chosen: list[dict[str, Any]] = []
    wanted = {"failed", "succeeded"}
    items = _Records(records)
    for seen, (index, stages) in enumerate(conversations(store, run_id)):
        if seen >= scan or (seen >= first and not wanted):
            break
        record = items.get(index)
        status = record.status if record is not None else "unfinished"
        if seen < first or status in wanted:
            wanted.discard(status)
            chosen.append(_view(index, record, status, stages, chars))
    items.close()
    return chosen


class _Records:
    """The run's records, read forward as far as asked (they and the conversations are both in
    input order, so one pass serves both)."""

    def __init__(self, records: Iterable[ItemRecord]) -> None:
        self._rest = iter(records)
        self._current: ItemRecord | None = None
        self._done = False

    def get(self, index: int) -> ItemRecord | None:
        while not self._done and (self._current is None or self._current.index < index):
            self._current = next(self._rest, None)
            self._done = self._current is None
        return self._current if self._current is not None and self._current.index == index else None

    def close(self) -> None:
        """Close a store cursor that was not read to its end."""
        close = getattr(self._rest, "close", None)
        if close is not None:
            close()


def _view(
    index: int, record: ItemRecord | None, status: str, stages: Mapping[str, list[TurnRow]], chars: int
) -> dict[str, Any]:
    item_id = record.id if record is not None else str(index)
    error = None
    if record is not None and record.error:
        error = clip(f"{record.error.get('stage', '?')}: {record.error.get('message', '')}", chars)
    return {
        "id": item_id,
        "status": status,
        "error": error,
        "stages": [{"name": stage, "steps": _steps(rows, chars)} for stage, rows in stages.items()],
    }


def _steps(rows: list[TurnRow], chars: int) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    last_answer = None
    for row in rows:
        message = row.message
        if row.role == OPENING:
            for sent in message.get("messages") or ():
                role = "system" if sent.get("role") == "system" else "user"
                steps.append({"kind": role, "text": clip(str(sent.get("content") or ""), chars)})
        elif row.role == "assistant":
            calls = [
                {"name": str(c.get("name")), "arguments": clip(_json(c.get("arguments")), chars)}
                for c in message.get("tool_calls") or ()
            ]
            step = {
                "kind": "assistant",
                "turn": row.turn,
                "text": clip(str(message.get("content") or ""), chars),
            }
            step["calls"] = calls
            steps.append(step)
            last_answer = step if not calls else None
        elif row.role == "tool":
            steps.append(
                {
                    "kind": "tool",
                    "turn": row.turn,
                    "tool": row.tool or "?",
                    "text": clip(str(message.get("content") or ""), chars),
                    "error": row.is_error,
                    "seconds": f"{row.seconds:.3f}",
                }
            )
        else:  # a repair's note, sent as the user
            steps.append({"kind": "user", "text": clip(str(message.get("content") or ""), chars)})
    if last_answer is not None and steps and steps[-1] is last_answer:
        last_answer["kind"] = "answer"
    return steps


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
