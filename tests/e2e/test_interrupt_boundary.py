"""Ctrl-C stops each chain at its next stage boundary, as the README says: the stage in flight
finishes and is kept, no other stage starts, and ``resume`` goes on from there.

A real ``chainfleet`` process; the moment of the Ctrl-C is not raced with a sleep: the first
stage is a tool step that sends SIGINT to its own process for item ``a`` and then yields to the
event loop until the handler has run, so the signal always lands inside that stage."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
SRC = str(Path(__file__).resolve().parents[2] / "src")

TOOL = """\
import asyncio
import os
import signal
from pathlib import Path

CALLS = Path(__file__).with_name("calls.log")


async def research(context):
    with CALLS.open("a", encoding="utf-8") as log:
        log.write(context["topic"] + "\\n")
    if context["topic"] == "a" and not os.environ.get("NO_SIGNAL"):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, mid-stage
        for _ in range(100):  # the loop reads the signal and runs the handler: no clock involved
            await asyncio.sleep(0)
    return "notes on " + context["topic"]
"""

PIPELINE = """\
name: boundary
model: sim
sim: {latency: 0}
input: topic
stages:
  - name: research
    tool: interrupt_tool:research
  - name: write
    prompt: "Write on {{ topic }} from {{ research }}"
  - name: edit
    prompt: "Edit:\\n{{ write }}"
"""


def chainfleet(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": SRC, **env}
    return subprocess.run(
        [CHAINFLEET, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=120, check=False
    )


def stage_results(out: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(out / "run.db") as db:
        rows = db.execute("SELECT item_id, stage FROM stage_results ORDER BY item_id, stage").fetchall()
    return [(str(a), str(b)) for a, b in rows]


def test_ctrl_c_stops_at_the_next_stage_boundary_keeping_the_stage_that_finished(tmp_path: Path) -> None:
    (tmp_path / "interrupt_tool.py").write_text(TOOL, encoding="utf-8")
    (tmp_path / "p.yaml").write_text(PIPELINE, encoding="utf-8")
    (tmp_path / "topics.txt").write_text("a\nb\nc\n", encoding="utf-8")

    stopped = chainfleet("run", "p.yaml", "-i", "topics.txt", "-c", "1", "--out", "out", cwd=tmp_path)

    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    # item a finished its research and stopped there: before, its whole chain ran (write, edit)
    assert [(r["id"], r["status"]) for r in results] == [("1", "skipped"), ("2", "skipped"), ("3", "skipped")]
    assert stage_results(tmp_path / "out") == [("1", "research")]
    assert "finishing the stage each of the 1 chains in flight is in" in stopped.stderr

    resumed = chainfleet("resume", "out", "-q", cwd=tmp_path, NO_SIGNAL="1")

    assert resumed.returncode == 0, resumed.stderr
    results = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 3
    assert results[0]["outputs"]["research"] == "notes on a"
    # a's research was kept, not made again
    assert (tmp_path / "calls.log").read_text().split() == ["a", "b", "c"]
