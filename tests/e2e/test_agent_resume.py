"""An agent killed mid-loop (kill -9) and resumed: no finished model turn is asked again and no
finished tool call is made again, as the calls table, the sim-server's own counts and a
side-effect log written by the tool itself show; the resumed run finishes every item. Run on
the in-process sim and on OpenAI's SDK against the sim-server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from waiting import wait_until

#: the chainfleet command on this worktree's sources (PYTHONPATH is passed to the child)
CLI = [sys.executable, "-c", "from chainfleet.cli import main; main()"]
PIPELINE = """\
name: agents
input: topic
sim: {latency: 0.15, tool_turns: 3}
stages:
  - name: research
    prompt: "Research {{ topic }}."
    tools:
      - function: sidefx:record
  - name: write
    prompt: "Write on {{ topic }} from {{ research }}."
"""

TOOL = """\
import os


def record(query: str, idempotency_key: str) -> str:
    \"\"\"Record a side effect: one line per call, with the call's idempotency key.\"\"\"
    with open(os.environ["SIDEFX_LOG"], "a", encoding="utf-8") as log:
        log.write(idempotency_key + "\\n")
    return "recorded " + query[:30]
"""


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def _stored_tool_keys(db: Path) -> set[str]:
    """The idempotency keys of the tool results the store holds."""
    rows = _rows(db, "SELECT item_id, stage, turn, message FROM agent_turns WHERE role = 'tool'")
    return {f"{item}/{stage}/{turn}/{json.loads(str(m))['tool_call_id']}" for item, stage, turn, m in rows}


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(latency=0.15))
    sim.start()
    yield sim
    sim.stop()


@pytest.mark.parametrize("where", ["sim", "sim-server"])
def test_a_killed_agent_resumes_at_its_turn_and_makes_no_finished_call_again(
    tmp_path: Path, where: str, server: SimServerThread
) -> None:
    server.reset()
    pipeline = PIPELINE
    if where == "sim-server":  # the same agent through OpenAI's SDK over HTTP
        pipeline = PIPELINE.replace("input: topic\n", "input: topic\nmodel: openai:gpt-sim\n").replace(
            "Research {{ topic }}.", "Research {{ topic }}. [[sim:tool_turns=3]]"
        )
    (tmp_path / "agents.yaml").write_text(pipeline, encoding="utf-8")
    (tmp_path / "sidefx.py").write_text(TOOL, encoding="utf-8")
    (tmp_path / "topics.txt").write_text("".join(f"topic {i}\n" for i in range(8)), encoding="utf-8")
    log, out, db = tmp_path / "sidefx.log", tmp_path / "out", tmp_path / "out" / "run.db"
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "SIDEFX_LOG": str(log), "PYTHONPATH": src, "OPENAI_API_KEY": "sk-sim",
           "OPENAI_BASE_URL": f"{server.url}/v1", "NO_PROXY": "127.0.0.1"}  # fmt: skip
    command = [*CLI, "run", str(tmp_path / "agents.yaml")]
    proc = subprocess.Popen(
        [*command, "-i", str(tmp_path / "topics.txt"), "-c", "3", "--out", str(out), "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(
        lambda: len(_rows(db, "SELECT 1 FROM agent_turns WHERE role = 'tool'")) >= 6,
        "the run did not get that far",
        alive=proc,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    finished_before = _stored_tool_keys(db)
    turns_before = len(_rows(db, "SELECT 1 FROM agent_turns WHERE role = 'assistant'"))
    assert finished_before and turns_before

    resumed = subprocess.run(
        [*CLI, "resume", str(out), "-q"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 8

    made = Counter(log.read_text(encoding="utf-8").split())
    assert all(made[key] == 1 for key in finished_before)  # a finished tool call is never made again
    assert set(made) == _stored_tool_keys(db)  # and every call made has its result stored
    again = [key for key, count in made.items() if count > 1]
    assert not set(again) & finished_before  # only a call in flight at the kill may run twice
    # every model turn of the agent is asked once: one successful call per stored turn
    asked = _rows(db, "SELECT COUNT(*) FROM calls WHERE stage = 'research' AND status = 'ok'")[0][0]
    stored = _rows(db, "SELECT COUNT(*) FROM agent_turns WHERE role = 'assistant'")[0][0]
    assert asked == stored == 8 * 4  # three tool turns and the answer, per item
    if where == "sim-server":  # the server's own count: each turn's conversation answered once,
        # but for a turn in flight at the kill (answered, not yet stored): at most one per chain
        answered = server.stats()["completed_by_key"]
        again = sum(count - 1 for count in answered.values())
        assert again <= 3 and server.stats()["ok"] == 8 * 4 + 8 + again  # agent turns, writes
