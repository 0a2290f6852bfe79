"""Agents in batch mode (``mode: batch`` on a stage with ``tools:``) with the real SDKs against
the sim-server's batch APIs: every model turn goes into a batch, in rounds, carrying the
conversation and the tools in OpenAI's and Anthropic's formats; the trajectories and outputs are
the online run's; kill -9 mid-round and resume makes no finished turn or tool call again."""

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
from typing import Any

import pytest
import yaml

from chainfleet.pipeline import Pipeline
from chainfleet.runner.api import run
from chainfleet.sim.batch import BatchSimSettings
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from conftest import FAST_BATCH, read_report, read_results
from waiting import wait_until

pytestmark = pytest.mark.e2e

KEY = "sk-agent-batch-0123456789"
#: the chainfleet command on this worktree's sources (PYTHONPATH is passed to the child)
CLI = [sys.executable, "-c", "from chainfleet.cli import main; main()"]

TOOL = """\
import os


def record(query: str, idempotency_key: str) -> str:
    \"\"\"Record a side effect: one line per call, with the call's idempotency key.\"\"\"
    with open(os.environ["SIDEFX_LOG"], "a", encoding="utf-8") as log:
        log.write(idempotency_key + "\\n")
    return "recorded " + query[:30]
"""


def agent_pipeline(model: str, mode: str, *, window: float = 0.1) -> dict[str, Any]:
    return {
        "name": "agents",
        "model": model,
        "input": "topic",
        "mode": mode,
        "batch": {**FAST_BATCH, "window": window},
        "stages": [
            {
                "name": "research",
                "prompt": "Research {{ topic }}.",
                "tools": [{"function": "sidefx:record"}],
            },
            {"name": "write", "prompt": "Write on {{ topic }} from {{ research }}."},
        ],
    }


def topics(n: int) -> list[str]:
    """Items whose agents take one to three tool turns (the sim-server reads the trigger)."""
    return [f"topic {i} [[sim:tool_turns={i % 3 + 1}]]" for i in range(n)]


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,)), batch=BatchSimSettings(delay=0.3))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimServerThread:
    server._call(lambda: server.server.batch.configure(**BatchSimSettings(delay=0.3).model_dump()))
    server.reset()
    server._call(server.server.batch.reset)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("SIDEFX_LOG", str(tmp_path / "sidefx.log"))
    (tmp_path / "sidefx.py").write_text(TOOL, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return server


def batch_stats(sim: SimServerThread) -> dict[str, Any]:
    return sim._call(sim.server.batch.stats)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute(sql).fetchall()
    except sqlite3.Error:
        return []


def stored_tool_keys(db: Path) -> set[str]:
    """The idempotency keys of the tool results the store holds."""
    found = rows(db, "SELECT item_id, stage, turn, message FROM agent_turns WHERE role = 'tool'")
    return {f"{item}/{stage}/{turn}/{json.loads(str(m))['tool_call_id']}" for item, stage, turn, m in found}


def trajectory(out: Path) -> list[tuple[Any, ...]]:
    return rows(
        out / "run.db",
        "SELECT item_id, stage, seq, turn, role, message, tool, is_error FROM agent_turns "
        "ORDER BY item_id, stage, seq",
    )


@pytest.mark.parametrize("model", ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"])
def test_batched_agents_go_in_rounds_and_match_the_online_run(
    sim: SimServerThread, tmp_path: Path, model: str
) -> None:
    items = topics(9)
    log = tmp_path / "sidefx.log"
    online = run(Pipeline.from_dict(agent_pipeline(model, "online")), items, out=tmp_path / "online")
    assert online.items_succeeded == 9
    calls_online, tool_calls_online = sim.stats()["calls"], len(log.read_text().split())
    log.unlink()
    sim.reset()

    batched = run(Pipeline.from_dict(agent_pipeline(model, "batch")), items, out=tmp_path / "batch")
    assert batched.items_succeeded == 9
    # the same conversations, tool calls, arguments and results, and the same outputs
    assert trajectory(tmp_path / "batch") == trajectory(tmp_path / "online")
    assert [r["outputs"] for r in read_results(tmp_path / "batch")] == [
        r["outputs"] for r in read_results(tmp_path / "online")
    ]
    # every turn went through a batch, once: 2, 3 or 4 research turns an item, then write
    turns = sum(i % 3 + 2 for i in range(9))
    stats = batch_stats(sim)
    assert stats["requests_submitted"] == stats["distinct_requests"] == turns + 9
    assert stats["max_submissions_per_request"] == 1
    assert sim.stats()["calls"] == 0  # no online call
    assert sim.stats()["tool_calls"] == tool_calls_online > 0  # the server asked for them in batches
    assert len(log.read_text().split()) == tool_calls_online  # and each was made once
    # rounds: an item's turn n+1 went in a later batch than its turn n (at least four rounds)
    assert stats["jobs_created"] >= 4
    assert calls_online == turns + 9
    report = read_report(tmp_path / "batch")
    assert report["batch"]["requests"]["succeeded"] == turns + 9
    # half price, as for any batched stage
    assert batched.cost_usd == pytest.approx(online.cost_usd / 2, abs=2e-6)


def test_a_batched_agent_killed_mid_round_resumes_without_repeating_a_turn_or_a_tool_call(
    sim: SimServerThread, tmp_path: Path
) -> None:
    sim._call(lambda: sim.server.batch.configure(delay=1.0))
    data = agent_pipeline("openai:gpt-4o-mini", "batch", window=0.2)
    data["stages"][0]["prompt"] = "Research {{ topic }}. [[sim:tool_turns=3]]"
    (tmp_path / "agents.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (tmp_path / "topics.txt").write_text("".join(f"topic {i}\n" for i in range(12)), encoding="utf-8")
    log, out, db = tmp_path / "sidefx.log", tmp_path / "out", tmp_path / "out" / "run.db"
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(tmp_path)])}
    run_args = [
        "run",
        str(tmp_path / "agents.yaml"),
        "-i",
        str(tmp_path / "topics.txt"),
        "--out",
        str(out),
        "-q",
    ]
    child = subprocess.Popen(
        [*CLI, *run_args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )

    # kill mid-round: the first round's tools are done and stored, the second round is at the server
    def mid_round() -> bool:
        stored_tools = rows(db, "SELECT COUNT(*) FROM agent_turns WHERE role = 'tool'")
        stats = batch_stats(sim)
        return bool(
            stored_tools
            and stored_tools[0][0] >= 12
            and stats["jobs_created"] >= 2
            and stats["jobs_in_progress"]
        )

    wait_until(mid_round, "the run never got to its second round", timeout=90, alive=child)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    finished_before = stored_tool_keys(db)
    assert finished_before

    resumed = subprocess.run(
        [*CLI, "resume", str(out), "-q"], env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert [r["status"] for r in read_results(out)] == ["succeeded"] * 12
    # no model turn sent twice: the batch in flight at the kill was polled again, not resent
    after = batch_stats(sim)
    assert after["max_submissions_per_request"] == 1
    assert after["requests_submitted"] == after["distinct_requests"] == 12 * 4 + 12
    assert rows(db, "SELECT COUNT(*) FROM agent_turns WHERE role = 'assistant'")[0][0] == 12 * 4
    # no tool call made twice: the side-effect log has each stored result's key once
    made = Counter(log.read_text(encoding="utf-8").split())
    again = {key for key, count in made.items() if count > 1}
    assert not again & finished_before  # a finished call is never made again (one in flight may be)
    assert set(made) == stored_tool_keys(db) > finished_before
