"""Nothing lost, nothing paid twice: kill -9, Ctrl-C, resume, edited stages, budgets, and a
store that is not ours. Real subprocesses, real signals, the sim-server counting every call."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from conftest import read_results
from sim_cli import cli_helpers

KEY = "sk-resume-test-0123456789"

ITEMS = 30

PIPELINE = """\
name: content
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}: the key facts."
    max_tokens: 300
  - name: write
    prompt: "Write an article on {{ topic }} from:\\n{{ research }}"
    max_tokens: 600
  - name: edit
    prompt: "%s:\\n{{ write }}"
    max_tokens: 600
"""


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0.05))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread) -> SimServerThread:
    server.configure(**SimServerSettings(api_keys=(KEY,), latency=0.05).model_dump())
    server.reset()
    return server


def write_files(folder: Path) -> dict[str, Path]:
    pipeline = folder / "content.yaml"
    pipeline.write_text(PIPELINE % "Edit this draft", encoding="utf-8")
    topics = folder / "topics.txt"
    topics.write_text("\n".join(f"topic number {i}" for i in range(1, ITEMS + 1)) + "\n", encoding="utf-8")
    return {"pipeline": pipeline, "topics": topics}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return write_files(tmp_path)


env, start, finish, wait_for_ok = cli_helpers(KEY)

results = read_results


def essentials(out: Path) -> list[tuple[str, str, dict[str, str]]]:
    return [(r["id"], r["status"], r["outputs"]) for r in results(out)]


@pytest.fixture
def uninterrupted(sim: SimServerThread, files: dict[str, Path], tmp_path: Path) -> list[Any]:
    out = tmp_path / "whole"
    done = finish(
        sim, "run", str(files["pipeline"]), "-i", str(files["topics"]), "-c", "4", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    sim.reset()
    return essentials(out)


@pytest.mark.parametrize("kill_after", [3, 25, 60])
def test_kill_9_then_resume_loses_nothing_and_pays_nothing_twice(
    sim: SimServerThread, files: dict[str, Path], tmp_path: Path, uninterrupted: list[Any], kill_after: int
) -> None:
    out = tmp_path / "run"
    proc = start(sim, "run", str(files["pipeline"]), "-i", str(files["topics"]), "-c", "4", "--out", str(out))
    wait_for_ok(sim, kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    done = finish(sim, "resume", str(out))
    assert done.returncode == 0, done.stderr
    assert essentials(out) == uninterrupted
    twice = [key for key, n in sim.stats()["completed_by_key"].items() if n > 1]
    # only calls in flight at the kill (at most one per chain in flight) may be made again
    assert len(twice) <= 4, twice
    assert sum(sim.stats()["completed_by_key"].values()) <= 3 * ITEMS + 4


def test_ctrl_c_finishes_in_flight_saves_and_resumes(
    sim: SimServerThread, files: dict[str, Path], tmp_path: Path, uninterrupted: list[Any]
) -> None:
    out = tmp_path / "run"
    proc = start(sim, "run", str(files["pipeline"]), "-i", str(files["topics"]), "-c", "4", "--out", str(out))
    wait_for_ok(sim, 10)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert f"chainfleet resume {out}" in stderr
    statuses = [r["status"] for r in results(out)]
    assert len(statuses) == ITEMS and "succeeded" in statuses and "skipped" in statuses
    assert (out / "report.json").exists()
    done = finish(sim, "resume", str(out))
    assert done.returncode == 0, done.stderr
    assert essentials(out) == uninterrupted
    assert all(n == 1 for n in sim.stats()["completed_by_key"].values())  # graceful: nothing twice


def test_a_second_ctrl_c_stops_at_once_and_still_loses_nothing(
    sim: SimServerThread, files: dict[str, Path], tmp_path: Path, uninterrupted: list[Any]
) -> None:
    sim.configure(latency=0.5)
    out = tmp_path / "run"
    proc = start(sim, "run", str(files["pipeline"]), "-i", str(files["topics"]), "-c", "4", "--out", str(out))
    wait_for_ok(sim, 6)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 130, stderr
    assert len(results(out)) == ITEMS
    sim.configure(latency=0.05)
    done = finish(sim, "resume", str(out))
    assert done.returncode == 0, done.stderr
    assert essentials(out) == uninterrupted


def test_editing_only_the_last_stage_reruns_only_that_stage(
    sim: SimServerThread, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["run", str(files["pipeline"]), "-i", str(files["topics"]), "-c", "4", "--out", str(out)]
    assert finish(sim, *args).returncode == 0
    sim.reset()
    files["pipeline"].write_text(PIPELINE % "Tighten this draft", encoding="utf-8")
    done = finish(sim, *args, "--resume")
    assert done.returncode == 0, done.stderr
    assert sim.stats()["ok"] == ITEMS  # one edit call per item, nothing else
    assert f"reused {2 * ITEMS} finished stage results" in done.stdout


def test_a_folder_holding_a_run_is_not_overwritten_without_resume(
    sim: SimServerThread, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["run", str(files["pipeline"]), "-i", str(files["topics"]), "--out", str(out)]
    assert finish(sim, *args).returncode == 0
    calls = sim.stats()["calls"]
    again = finish(sim, *args)
    assert again.returncode == 2
    assert "already holds run" in again.stderr and "--resume" in again.stderr
    assert sim.stats()["calls"] == calls


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b""])
def test_a_corrupt_or_foreign_store_is_refused_and_left_alone(
    sim: SimServerThread, files: dict[str, Path], tmp_path: Path, content: bytes
) -> None:
    import sqlite3

    out = tmp_path / "run"
    out.mkdir()
    store = out / "run.db"
    if content:
        store.write_bytes(content)
    else:  # a SQLite file of another program
        with sqlite3.connect(store) as db:
            db.execute("CREATE TABLE invoices (id INTEGER)")
    before = store.read_bytes()
    done = finish(
        sim, "run", str(files["pipeline"]), "-i", str(files["topics"]), "--out", str(out), "--resume"
    )
    assert done.returncode == 2
    assert "not a chainfleet run store" in done.stderr or "other tables" in done.stderr
    assert done.stderr.count("error:") == 1
    assert store.read_bytes() == before
    assert sim.stats()["calls"] == 0


def test_a_token_budget_stops_admission_and_says_what_was_spent(
    sim: SimServerThread, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    done = finish(
        sim,
        "run",
        str(files["pipeline"]),
        "-i",
        str(files["topics"]),
        "-c",
        "2",
        "--out",
        str(out),
        "--max-tokens",
        "20000",
    )
    assert done.returncode == 1
    report = json.loads((out / "report.json").read_text())
    spent = report["tokens"]["input"] + report["tokens"]["output"]
    assert report["stopped"].startswith("budget")
    assert 0 < spent <= 20000 * 1.25  # chains in flight finish; admission stopped before it
    assert report["items"]["skipped"] > 0
    assert "stopped: the budget" in done.stderr and f"{spent:,} tokens" in done.stderr


def test_a_shared_cache_makes_a_rerun_free_and_no_cache_really_calls(
    sim: SimServerThread, files: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    base = ["run", str(files["pipeline"]), "-i", str(files["topics"]), "-c", "4"]
    first = finish(sim, *base, "--out", str(tmp_path / "a"), "--cache", str(cache))
    assert first.returncode == 0, first.stderr
    calls = sim.stats()["calls"]
    assert calls == 3 * ITEMS, (sim.stats()["status"], first.stdout)
    again = finish(sim, *base, "--out", str(tmp_path / "b"), "--cache", str(cache))
    assert again.returncode == 0, again.stderr
    assert sim.stats()["calls"] == calls  # every answer came from the cache
    assert f"{3 * ITEMS} cached responses" in again.stdout
    assert essentials(tmp_path / "b") == essentials(tmp_path / "a")
    fresh = finish(sim, *base, "--out", str(tmp_path / "c"), "--no-cache")
    assert fresh.returncode == 0
    assert sim.stats()["calls"] == 2 * calls
