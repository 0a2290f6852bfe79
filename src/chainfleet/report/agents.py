"""What a run's agents did, from the store's agent turns: figures for the report, and each
item's trajectory for results.jsonl.

:func:`agent_section` is the report's "Agents" section: per agent stage, the model turns an item
took (mean, p95, max); per tool, its calls, the error results it gave, its latency (p50,
p95) and the time its calls waited for its own limits (concurrency, rpm). :func:`trajectories`
yields each item's trajectory in input order, to be joined to its results.jsonl record: every
step of the item's conversation per agent stage (a model turn's text and tool calls with their
arguments, each tool's result), with long texts clipped to ``chars`` characters (the store keeps
them whole).

Example::

    section = agent_section(store, run_id)   # None when the pipeline has no agent
    for index, trajectory in trajectories(store, run_id, chars=500): ...
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chainfleet.redact import clip
from chainfleet.store.agent_turns import OPENING, AgentTurns, TurnRow
from chainfleet.store.runstore import RunStore
from chainfleet.store.stats import percentile

__all__ = [
    "TRAJECTORY_CHARS",
    "ToolBar",
    "agent_lines",
    "agent_markdown",
    "agent_section",
    "agent_steps",
    "conversations",
    "tool_bars",
    "trajectories",
]

#: how long a text of a trajectory step in results.jsonl may be (``--trajectory-chars``)
TRAJECTORY_CHARS = 2000


def conversations(store: RunStore, run_id: str) -> Iterator[tuple[int, dict[str, list[TurnRow]]]]:
    """Per item (in input order) each agent stage's conversation as stored rows (its opening
    first when stored): for views that show the whole conversation."""
    return _conversations(store, run_id)


def _conversations(store: RunStore, run_id: str) -> Iterator[tuple[int, dict[str, list[TurnRow]]]]:
    """Per item (in input order), each agent stage's last conversation (a revision has its own,
    and the last one is the output's), its ``opening`` row (what the agent was first sent) first
    when it has one."""
    index: int | None = None
    by_stage: dict[str, dict[str, list[TurnRow]]] = {}
    for row in AgentTurns(store).of_run(run_id):
        if row.index != index:
            if index is not None:
                yield index, _last(by_stage)
            index, by_stage = row.index, {}
        by_stage.setdefault(row.stage, {}).setdefault(row.key, []).append(row)
    if index is not None:
        yield index, _last(by_stage)


def _last(by_stage: dict[str, dict[str, list[TurnRow]]]) -> dict[str, list[TurnRow]]:
    """Each stage's conversation that went furthest (a revision's tries each have their own key;
    the one kept is the longest, then the last written)."""
    return {stage: max(keys.values(), key=len) for stage, keys in by_stage.items()}


def agent_section(
    store: RunStore, run_id: str, prices: Mapping[str, Sequence[float] | None] | None = None
) -> dict[str, Any] | None:
    """The report's agents section (None: no agent stage ran). ``prices``: each agent stage's
    USD per million tokens (in, out), as the run recorded them; a stage without one has
    ``cost_usd`` None."""
    stages: dict[str, _StageFigures] = defaultdict(_StageFigures)
    tools: dict[str, dict[str, Any]] = {}
    for _, conversations in _conversations(store, run_id):
        for stage, rows in conversations.items():
            stages[stage].add(rows)
            for row in rows:
                if row.role == "tool" and row.tool is not None:
                    empty = {"calls": 0, "errors": 0, "seconds": [], "waited": 0.0}
                    tool = tools.setdefault(row.tool, empty)
                    tool["waited"] += row.waited
                    tool["calls"] += 1
                    tool["errors"] += int(row.is_error)
                    tool["seconds"].append(row.seconds)
    if not stages:
        return None
    return {
        "stages": {stage: figures.to_dict((prices or {}).get(stage)) for stage, figures in stages.items()},
        "tools": {
            name: {
                "calls": tool["calls"],
                "errors": tool["errors"],
                "p50_seconds": round(percentile(tool["seconds"], 50), 4),
                "p95_seconds": round(percentile(tool["seconds"], 95), 4),
                "waited_seconds": round(tool["waited"], 4),
            }
            for name, tool in sorted(tools.items())
        },
    }


@dataclass
class _StageFigures:
    """One agent stage's turns per item and the tokens of its model turns."""

    turns: list[int] = field(default_factory=list)
    model_turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, rows: list[TurnRow]) -> None:
        self.turns.append(max((r.turn for r in rows if r.role == "assistant"), default=0))
        for row in rows:
            if row.role == "assistant":
                self.model_turns += 1
                self.input_tokens += row.input_tokens
                self.output_tokens += row.output_tokens

    def to_dict(self, price: Sequence[float] | None) -> dict[str, Any]:
        per_turn = max(self.model_turns, 1)
        cost = None
        if price is not None:
            cost = round((self.input_tokens * price[0] + self.output_tokens * price[1]) / 1_000_000, 6)
        return {
            "items": len(self.turns),
            "turns_mean": round(statistics.fmean(self.turns), 2),
            "turns_p95": round(percentile([float(c) for c in self.turns], 95), 2),
            "turns_max": max(self.turns),
            "model_turns": self.model_turns,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "input_tokens_per_turn": round(self.input_tokens / per_turn, 1),
            "output_tokens_per_turn": round(self.output_tokens / per_turn, 1),
            "cost_usd": cost,
        }


def agent_lines(section: dict[str, Any] | None) -> list[str]:
    """The agents section for the terminal summary: one line per agent stage and per tool."""
    if not section:
        return []
    lines = [
        f"agent {stage}: turns per item mean {s['turns_mean']}, p95 {s['turns_p95']}, max {s['turns_max']}; "
        f"tokens per turn {s['input_tokens_per_turn']} in, {s['output_tokens_per_turn']} out; cost {_usd(s)}"
        for stage, s in section["stages"].items()
    ]
    lines += [
        f"  tool {name}: {t['calls']} calls, {t['errors']} errors, "
        f"p50 {t['p50_seconds']} s, p95 {t['p95_seconds']} s, waited {t['waited_seconds']} s for its limits"
        for name, t in section["tools"].items()
    ]
    return lines


def agent_markdown(section: dict[str, Any] | None) -> list[str]:
    """report.md's agents section (nothing when no agent stage ran)."""
    if not section:
        return []
    lines = ["", "## Agents", ""]
    lines += ["| stage | items | turns mean | p95 | max | tokens in / turn | tokens out / turn | cost |"]
    lines += ["|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {stage} | {s['items']} | {s['turns_mean']} | {s['turns_p95']} | {s['turns_max']} "
        f"| {s['input_tokens_per_turn']} | {s['output_tokens_per_turn']} | {_usd(s)} |"
        for stage, s in section["stages"].items()
    ]
    lines += ["", "| tool | calls | errors | p50 s | p95 s | waited for its limits s |"]
    lines += ["|---|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {name} | {t['calls']} | {t['errors']} | {t['p50_seconds']} | {t['p95_seconds']} "
        f"| {t['waited_seconds']} |"
        for name, t in section["tools"].items()
    ]
    return lines


@dataclass(frozen=True)
class ToolBar:
    """One tool call on the timeline: its item, stage and tool, when it ran (seconds since the
    run started), how long it waited for the tool's own limits first, and whether it failed."""

    index: int
    item_id: str
    stage: str
    tool: str
    started: float
    ended: float
    waited: float
    is_error: bool


def tool_bars(store: RunStore, run_id: str) -> Iterator[ToolBar]:
    """Every tool call of the run that has its time stored, for the timeline (a call's start is
    its end less the seconds it ran; retries of a transient error are one bar)."""
    for row in AgentTurns(store).of_run(run_id):
        if row.role != "tool" or row.ended is None or row.tool is None:
            continue
        yield ToolBar(
            index=row.index,
            item_id=row.item_id,
            stage=row.stage,
            tool=row.tool,
            started=max(row.ended - row.seconds, 0.0),
            ended=row.ended,
            waited=row.waited,
            is_error=row.is_error,
        )


def _usd(stage: Mapping[str, Any]) -> str:
    cost = stage.get("cost_usd")
    return "unknown" if cost is None else f"${cost:.4f}"


def trajectories(store: RunStore, run_id: str, *, chars: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(item index, {stage: steps}) for every item an agent worked on, in input order."""
    for index, conversations in _conversations(store, run_id):
        yield (
            index,
            {
                stage: [_step(row, chars) for row in rows if row.role != OPENING]
                for stage, rows in conversations.items()
            },
        )


def agent_steps(store: RunStore, run_id: str) -> dict[int, str]:
    """Each item's whole trajectory without its timings, as comparable text (``chainfleet
    compare`` checks that one at a time and N at once took the same steps)."""
    steps = {}
    for index, conversations in _conversations(store, run_id):
        plain = {stage: [(r.turn, r.role, r.message, r.tool, r.is_error) for r in rows if r.role != OPENING]
                 for stage, rows in conversations.items()}  # fmt: skip
        steps[index] = json.dumps(plain, sort_keys=True, default=str)
    return steps


def _step(row: TurnRow, chars: int) -> dict[str, Any]:
    """One step as results.jsonl shows it, its texts clipped to ``chars``."""
    message = row.message
    if row.role == "assistant":
        step: dict[str, Any] = {"turn": row.turn, "text": clip(str(message.get("content") or ""), chars)}
        calls = message.get("tool_calls") or []
        if calls:
            step["tool_calls"] = [
                {"id": c["id"], "name": c["name"], "arguments": _clipped(c.get("arguments"), chars)}
                for c in calls
            ]
        return step
    if row.role == "tool":
        return {
            "turn": row.turn,
            "tool": row.tool,
            "call_id": message.get("tool_call_id"),
            "result": clip(str(message.get("content") or ""), chars),
            "is_error": row.is_error,
            "seconds": round(row.seconds, 4),
        }
    return {"turn": row.turn, "note": clip(str(message.get("content") or ""), chars)}


def _clipped(arguments: Any, chars: int) -> Any:
    """Arguments as they are when short, else their JSON text clipped."""
    text = json.dumps(arguments, ensure_ascii=False, default=str)
    return arguments if len(text) <= chars else clip(text, chars)
