"""Agents in batch mode on the built-in sim (offline): each model turn goes into a sim batch, in
rounds, and the trajectories and outputs are the online run's."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chainfleet import Pipeline, run
from unit.chain import agent_tools
from unit.chain.test_agent_loop import TOOLS, trajectory


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    agent_tools.CALLS.clear()


def pipeline(mode: str) -> Pipeline:
    return Pipeline.from_dict(
        {
            "model": "sim",
            "sim": {"latency": 0},
            "input": "topic",
            "mode": mode,
            "batch": {"window": 0.05, "poll": 0.05, "sim_delay": 0.1},
            "stages": [
                {
                    "name": "research",
                    "prompt": "Research {{ topic }}.",
                    "tools": [{"function": f"{TOOLS}:search"}, {"function": f"{TOOLS}:lookup"}],
                },
                {"name": "write", "prompt": "Write on {{ topic }} from {{ research }}"},
            ],
        }
    )


def ledger(out: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(out / "run.db") as db:
        return db.execute(sql).fetchall()


def test_batched_agents_on_the_sim_give_the_online_trajectories_in_rounds(tmp_path: Path) -> None:
    topics = [f"t{i} [[sim:tool_turns={i % 3 + 1}]]" for i in range(6)]
    online = run(pipeline("online"), topics, out=tmp_path / "online")
    tools_online = list(agent_tools.CALLS)
    agent_tools.CALLS.clear()
    batched = run(pipeline("batch"), topics, out=tmp_path / "batch")
    assert online.items_failed == batched.items_failed == 0
    assert trajectory(tmp_path / "batch") == trajectory(tmp_path / "online")
    assert [r.outputs for r in batched.results()] == [r.outputs for r in online.results()]
    assert sorted(map(repr, agent_tools.CALLS)) == sorted(map(repr, tools_online))
    # every research turn (2, 3 or 4 an item) and each write went through a batch, once
    turns = sum(i % 3 + 2 for i in range(6))
    assert ledger(tmp_path / "batch", "SELECT COUNT(*), COUNT(DISTINCT custom_id) FROM batch_requests") == [
        (turns + 6, turns + 6)
    ]
    # a turn that asked for tools keeps them in the ledger (a resume reads them back whole)
    kept = ledger(tmp_path / "batch", "SELECT COUNT(*) FROM batch_requests WHERE tool_calls IS NOT NULL")
    assert kept == [(turns - 6,)]
    # rounds: at least as many chunks as the longest agent's turns plus the write
    assert ledger(tmp_path / "batch", "SELECT COUNT(*) FROM batch_chunks")[0][0] >= 5
