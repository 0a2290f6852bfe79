"""Agent stages on the Ray backend, on a local Ray node (2 CPUs, no dashboard, 127.0.0.1 only):
Python tools resolved and run in the workers, every turn journaled through the driver, and the
trajectories (every tool call, its arguments and result) and outputs of a local run at -c 1.
MCP servers are started once per Ray worker (and once by the driver, to list them at load) and
closed with it.

Where Ray is not installed these tests skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chainfleet.pipeline import Pipeline
from chainfleet.runner.api import arun
from conftest import read_report, read_results

if importlib.util.find_spec("ray") is None:
    if os.environ.get("CI"):
        pytest.fail("CI: Ray is not installed (pip install -e '.[ray]')", pytrace=False)
    pytest.skip("Ray is not installed (pip install 'chainfleet[ray]')", allow_module_level=True)

pytestmark = pytest.mark.e2e

TOOLS = "unit.chain.agent_tools"


def agent_pipeline(**stage: Any) -> Pipeline:
    return Pipeline.from_dict(
        {
            "model": "sim",
            "sim": {"latency": 0.01},
            "input": "topic",
            "stages": [
                {
                    "name": "research",
                    "prompt": "Research {{ topic }}.",
                    "tools": [
                        {"function": f"{TOOLS}:search"},
                        {"function": f"{TOOLS}:lookup"},
                        {"function": f"{TOOLS}:broken"},
                    ],
                    **stage,
                },
                {
                    "name": "write",
                    "prompt": "Write on {{ topic }} from {{ research }}",
                    "gate": [{"min_words": 5}],
                },
            ],
        }
    )


def trajectory(out: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(out / "run.db") as db:
        return db.execute(
            "SELECT item_id, stage, seq, turn, role, message, tool, is_error, input_tokens, output_tokens "
            "FROM agent_turns ORDER BY item_id, stage, seq"
        ).fetchall()


def outcomes(out: Path) -> list[tuple[Any, ...]]:
    """Each item's status, outputs, gates and trajectory in results.jsonl (a tool's seconds aside:
    timing differs between any two runs)."""
    rows = sorted(read_results(out), key=lambda r: r["id"])
    steps = [
        {stage: [{k: v for k, v in step.items() if k != "seconds"} for step in trail]
         for stage, trail in (r.get("trajectory") or {}).items()}
        for r in rows
    ]  # fmt: skip
    return [(r["id"], r["status"], r["outputs"], r.get("gates"), s) for r, s in zip(rows, steps, strict=True)]


def test_agents_on_ray_give_the_trajectories_and_outputs_of_a_local_run_at_c1(
    ray_node: str, tmp_path: Path
) -> None:
    pipeline = agent_pipeline()
    topics = [f"topic {i} [[sim:tool_turns={i % 3 + 1}]]" for i in range(10)]
    local = asyncio.run(arun(pipeline, topics, out=tmp_path / "local", concurrency=1))
    remote = asyncio.run(
        arun(
            pipeline, topics, out=tmp_path / "ray", concurrency=4, backend="ray", workers=2, address=ray_node
        )
    )
    assert local.items_succeeded == remote.items_succeeded == 10
    steps = trajectory(tmp_path / "ray")
    assert steps == trajectory(tmp_path / "local")
    assert sum(1 for s in steps if s[4] == "tool") >= 10  # tools ran in the workers, results journaled
    assert outcomes(tmp_path / "ray") == outcomes(tmp_path / "local")
    ray_report, local_report = read_report(tmp_path / "ray"), read_report(tmp_path / "local")
    assert ray_report["agents"]["stages"] == local_report["agents"]["stages"]  # turns per item

    def counted(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
        return {name: (t["calls"], t["errors"]) for name, t in report["agents"]["tools"].items()}

    tools = counted(ray_report)
    assert tools == counted(local_report) and set(tools) == {"broken", "lookup", "search"}
    assert tools["broken"][0] == tools["broken"][1] > 0 and tools["search"][1] == 0  # broken always fails


def test_a_resumed_ray_run_continues_agents_at_their_stored_turn(ray_node: str, tmp_path: Path) -> None:
    """A Ray run whose agents stopped mid-loop (at max_turns 2) is resumed on Ray with a larger
    budget: the turns journaled through the driver are read back from its store and the agents
    go on from turn 2 (a kill -9 of the worker is the local resume test's and Ray's own)."""
    from unit.chain import agent_tools

    pipeline = agent_pipeline(max_turns=2, then="fail")
    topics = [f"topic {i} [[sim:tool_turns=3]]" for i in range(4)]
    out = tmp_path / "ray"
    first = asyncio.run(
        arun(pipeline, topics, out=out, concurrency=4, backend="ray", workers=2, address=ray_node)
    )
    assert first.items_failed == 4  # each stopped at max_turns with its turns journaled
    # the model turns and tool results journaled (the opening row, turn 0, is what was asked)
    before = [s for s in trajectory(out) if s[4] != "opening"]
    assert before and {s[3] for s in before} == {1, 2}
    agent_tools.CALLS.clear()
    more = agent_pipeline(max_turns=10)
    again = asyncio.run(
        arun(more, topics, out=out, concurrency=4, backend="ray", workers=2, address=ray_node, resume=True)
    )
    assert again.items_succeeded == 4
    after = [s for s in trajectory(out) if s[4] != "opening"]
    # the resumed agents went on from turn 2: the steps stored before are kept as they were
    assert [s[:8] for s in after if s[3] <= 2 and (s[4] == "assistant" or s[3] < 2)] == [
        s[:8] for s in before if s[4] == "assistant" or s[3] < 2
    ]
    assert max(s[3] for s in after) == 4


SERVER = """\
import atexit, os, sys
from mcp.server.mcpserver import MCPServer

log = os.environ["MCP_LOG"]
with open(log, "a") as f:
    f.write(f"start {os.getpid()}\\n")
atexit.register(lambda: open(log, "a").write(f"stop {os.getpid()}\\n"))
server = MCPServer("notes")


@server.tool()
def note(topic: str) -> str:
    \"\"\"Look up the notes on a topic.\"\"\"
    return "notes on " + topic[:40]


server.run()
"""


def test_mcp_servers_start_once_per_ray_worker_and_stop_with_it(
    ray_node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "mcp.log"
    monkeypatch.setenv("MCP_LOG", str(log))
    (tmp_path / "notes_server.py").write_text(SERVER, encoding="utf-8")
    server = {"command": ["python", str(tmp_path / "notes_server.py")], "env": {"MCP_LOG": str(log)}}
    pipeline = Pipeline.from_dict(
        {
            "model": "sim",
            "sim": {"latency": 0.01, "tool_turns": 2},
            "input": "topic",
            "stages": [{"name": "research", "prompt": "Research {{ topic }}.", "tools": [{"mcp": server}]}],
        }
    )
    topics = [f"topic {i}" for i in range(8)]
    local = asyncio.run(arun(pipeline, topics, out=tmp_path / "local", concurrency=1))
    assert local.items_succeeded == 8
    log.unlink()
    remote = asyncio.run(
        arun(
            pipeline, topics, out=tmp_path / "ray", concurrency=4, backend="ray", workers=2, address=ray_node
        )
    )
    assert remote.items_succeeded == 8
    steps = trajectory(tmp_path / "ray")
    assert steps == trajectory(tmp_path / "local")
    assert any(s[6] == "note" and not s[7] for s in steps)  # the server's tool answered in the workers
    lines = log.read_text(encoding="utf-8").split("\n")
    started = {line.split()[1] for line in lines if line.startswith("start ")}
    stopped = {line.split()[1] for line in lines if line.startswith("stop ")}
    # once for the driver's listing at load, once in each of the two workers; all closed after
    assert len(started) == 3 and stopped == started
