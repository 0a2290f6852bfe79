"""examples/research_agent.yaml runs offline to its end: a Research agent searching the shipped
corpus and asking a real MCP server (mcp-server-time over stdio), then the gated Write and Edit;
results.jsonl shows each item's trajectory and the report counts turns and tool calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from chainfleet.cli import main; main()"]


def test_the_research_agent_example_runs_offline(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [*CLI, "run", str(ROOT / "examples/research_agent.yaml"), "-i", str(ROOT / "examples/topics.txt"),
         "-o", str(out), "-q", "--trajectory-chars", "300"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 10
    steps = [s for r in results for s in r["trajectory"]["research"]]
    searched = [s for s in steps if s.get("tool") == "search"]
    assert searched and all(s["result"].startswith("[p") for s in searched)  # passages with ids
    assert any(s.get("tool") == "get_current_time" for s in steps)  # the MCP server answered
    assert all(len(s.get("text", "")) <= 300 + len("... (99,999 more characters)") for s in steps)
    assert all(r["gates"]["write"]["outcome"] == "passed" for r in results)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))["agents"]
    assert report["stages"]["research"]["turns_max"] <= 6
    assert report["tools"]["search"]["errors"] == 0
