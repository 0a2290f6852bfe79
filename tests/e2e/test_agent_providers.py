"""Agent stages on the real OpenAI and Anthropic SDKs, over loopback HTTP against the
sim-server, which plays agent in each wire format: chat completions function calling (with
parallel calls) and Messages tool_use/tool_result. The tools run, their results reach the
model (the answers quote them), every model turn is one call the server answered once, and a
contract holds on the final answer (Anthropic's through its forced answer tool)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet import Pipeline, arun
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from conftest import read_report, read_results
from sim_cli import point_sdks_at
from unit.chain import agent_tools

KEY = "sk-test-agents-0123456789-SECRET"
MODELS = ["openai:gpt-sim", "anthropic:claude-sim-test"]
TOOLS = "unit.chain.agent_tools"


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,)))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread, monkeypatch: pytest.MonkeyPatch) -> SimServerThread:
    point_sdks_at(server, monkeypatch, KEY)
    agent_tools.CALLS.clear()
    return server


def agent(model: str, **stage: Any) -> Pipeline:
    tools = [{"function": f"{TOOLS}:search"}, {"function": f"{TOOLS}:broken"}]
    return Pipeline.from_dict(
        {
            "model": model,
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}.", "tools": tools, **stage},
                {"name": "write", "prompt": "Write on {{ topic }} from {{ research }}"},
            ],
        }
    )


def stored_turns(out: Path) -> list[tuple[str, str, dict[str, Any]]]:
    with sqlite3.connect(out / "run.db") as db:
        rows = db.execute("SELECT item_id, role, message FROM agent_turns ORDER BY idx, seq").fetchall()
    return [(item, role, json.loads(message)) for item, role, message in rows]


@pytest.mark.parametrize("model", MODELS)
def test_an_agent_runs_its_tools_through_each_sdk(sim: SimServerThread, model: str, tmp_path: Path) -> None:
    topics = [f"topic {i} [[sim:tool_turns={1 + i % 3}]]" for i in range(6)]
    report = asyncio.run(arun(agent(model), topics, out=tmp_path, concurrency=3))
    assert report.items_succeeded == 6
    turns = stored_turns(tmp_path)
    asked = [m for _, role, m in turns if role == "assistant" and m.get("tool_calls")]
    results = [m for _, role, m in turns if role == "tool"]
    model_turns = sum(1 for _, role, _ in turns if role == "assistant")
    assert model_turns == 6 + sum(1 + i % 3 for i in range(6))  # the tool turns, then the answer
    assert len(results) == sum(len(m["tool_calls"]) for m in asked) == len(agent_tools.CALLS)
    assert any(len(m["tool_calls"]) == 2 for m in asked)  # parallel calls in one turn
    stats = sim.stats()
    assert stats["tool_calls"] == len(results)
    assert stats["ok"] == model_turns + 6  # every agent turn and each item's write, once
    assert all(count == 1 for count in stats["completed_by_key"].values())  # no turn asked twice
    for result in read_results(tmp_path):
        research = result["outputs"]["research"]
        steps = result["trajectory"]["research"]
        if any(s.get("tool") == "broken" for s in steps):
            assert "broken failed: error: RuntimeError: the index is offline" in research
        if any(s.get("tool") == "search" for s in steps):
            assert "search said: " in research
    assert read_report(tmp_path)["agents"]["stages"]["research"]["turns_max"] == 4


@pytest.mark.parametrize("model", MODELS)
def test_a_contract_holds_on_an_agents_final_answer(sim: SimServerThread, model: str, tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
        "required": ["facts"],
        "additionalProperties": False,
    }
    pipeline = agent(model, output=schema)
    topics = ["tea [[sim:tool_turns=1]]", "bees [[sim:tool_turns=2]]"]
    report = asyncio.run(arun(pipeline, topics, out=tmp_path))
    assert report.items_succeeded == 2
    assert all(isinstance(r["outputs"]["research"]["facts"], list) for r in read_results(tmp_path))
    structured = sim.stats()["structured"]
    assert structured == ({"json_schema": 2} if model.startswith("openai") else {"tool": 2})


def test_an_agents_answer_never_comes_from_the_response_cache(sim: SimServerThread, tmp_path: Path) -> None:
    """Its answer depends on what its tools return now: a second run with the same cache runs
    the agent again (the plain write stage is answered from the cache)."""
    for run in ("first", "second"):
        report = asyncio.run(
            arun(agent(MODELS[0]), ["tea [[sim:tool_turns=1]]"], out=tmp_path / run, cache=tmp_path / "cache")
        )
        assert report.items_succeeded == 1
    tool_calls = sim.stats()["tool_calls"]
    assert len(agent_tools.CALLS) == tool_calls and tool_calls >= 2  # the tools ran in both runs
    assert report.cache_hits == 1  # write, from the cache
