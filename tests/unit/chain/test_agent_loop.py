"""Agent stages on the simulated model: the loop, tool errors, budgets, contracts, durable turns."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chainfleet import Pipeline, run
from conftest import read_results
from unit.chain import agent_tools

TOOLS = "unit.chain.agent_tools"


def agent(tools: list[dict[str, Any]], **stage: Any) -> Pipeline:
    return Pipeline.from_dict(
        {
            "model": "sim",
            "sim": {"latency": 0},
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}.", "tools": tools, **stage},
                {"name": "write", "prompt": "Write on {{ topic }} from {{ research }}"},
            ],
        }
    )


def turns(out: Path) -> list[tuple[str, int, str, str | None, bool]]:
    with sqlite3.connect(out / "run.db") as db:
        rows = db.execute("SELECT item_id, turn, role, tool, is_error FROM agent_turns ORDER BY idx, seq")
        return [(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    agent_tools.CALLS.clear()


def test_the_model_calls_tools_then_answers_from_their_results(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:search"}, {"function": f"{TOOLS}:lookup"}])
    topics = ["bees [[sim:tool_turns=2]]", "tea [[sim:tool_turns=1]]"]
    report = run(pipeline, topics, out=tmp_path)
    assert report.items_failed == 0
    stored = turns(tmp_path)
    model_turns = {item: max(t for i, t, role, *_ in stored if i == item) for item, *_ in stored}
    assert sorted(model_turns.values()) == [2, 3]  # tool turns, then the answer
    assert len(agent_tools.CALLS) == sum(1 for row in stored if row[2] == "tool")
    assert all(isinstance(c[1].get("query", c[1].get("term")), str) for c in agent_tools.CALLS)
    results = read_results(tmp_path)
    assert all(r["status"] == "succeeded" and r["outputs"]["research"] for r in results)


def test_a_tool_that_raises_returns_its_error_to_the_model(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:broken"}])
    report = run(pipeline, ["bees [[sim:tool_turns=1]]"], out=tmp_path)
    assert report.items_failed == 0
    stored = turns(tmp_path)
    assert [row[2:] for row in stored] == [
        ("assistant", None, False),
        ("tool", "broken", True),
        ("assistant", None, False),
    ]
    with sqlite3.connect(tmp_path / "run.db") as db:
        message = json.loads(db.execute("SELECT message FROM agent_turns WHERE role = 'tool'").fetchone()[0])
    assert "RuntimeError: the index is offline" in message["content"]


def test_a_pydantic_model_parameter_is_validated_and_passed_as_the_model(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:filtered"}])
    report = run(pipeline, ["bees [[sim:tool_turns=1]]"], out=tmp_path)
    assert report.items_failed == 0
    assert agent_tools.CALLS and agent_tools.CALLS[0][0] == "filtered"
    assert isinstance(agent_tools.CALLS[0][1]["filters"]["year"], int)


def test_a_timeout_is_an_error_result_after_its_retries(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:slow", "timeout": 0.05, "retries": 1}])
    report = run(pipeline, ["bees [[sim:tool_turns=1]]"], out=tmp_path)
    assert report.items_failed == 0
    assert len(agent_tools.CALLS) == 2  # the call and its one retry
    with sqlite3.connect(tmp_path / "run.db") as db:
        message = json.loads(db.execute("SELECT message FROM agent_turns WHERE role = 'tool'").fetchone()[0])
    assert message["is_error"] and "timed out after 0.05 s" in message["content"]


def test_max_turns_fails_the_item_naming_the_stage_and_the_last_tool(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:search"}], max_turns=2)
    report = run(pipeline, ["bees [[sim:tool_turns=3]]"], out=tmp_path)
    assert report.items_failed == 1
    (result,) = read_results(tmp_path)
    assert result["status"] == "failed"
    assert "agent stage 'research' reached max_turns (2)" in result["error"]["message"]
    assert "the last tool asked for was 'search'" in result["error"]["message"]
    stored = turns(tmp_path)
    assert [row[1:3] for row in stored if row[2] == "assistant"] == [(1, "assistant"), (2, "assistant")]
    assert {row[1] for row in stored if row[2] == "tool"} == {1}  # turn 2's calls: no turn is left
    assert len(agent_tools.CALLS) == sum(row[2] == "tool" for row in stored)


def test_then_accept_keeps_the_last_answer_at_the_budget(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:search"}], max_turns=1, then="accept")
    report = run(pipeline, ["bees [[sim:tool_turns=3]]"], out=tmp_path)
    assert report.items_failed == 0


def test_a_contract_applies_to_the_final_answer(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
              "required": ["facts"]}  # fmt: skip
    pipeline = agent([{"function": f"{TOOLS}:search"}], output=schema)
    report = run(pipeline, ["bees [[sim:tool_turns=2]]"], out=tmp_path)
    assert report.items_failed == 0
    (result,) = read_results(tmp_path)
    assert isinstance(result["outputs"]["research"]["facts"], list)
