"""Batch mode with the real SDKs against the sim-server's batch APIs: same outputs as online,
errored and expired requests resubmitted on their own, kill -9 and resume without a chunk
submitted twice, a fatal error mid-run, an endpoint without batches, and ``--batch`` from the
command line."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
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
from conftest import FAST_BATCH, FAST_PIPELINE, read_report, read_results
from conftest import numbered_topics as topics

KEY = "sk-batch-test-0123456789"

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")

def pipeline(model: str = "sim", **changes: Any) -> Pipeline:
    data = json.loads(json.dumps(FAST_PIPELINE))
    data.update({"model": model, "batch": FAST_BATCH, **changes})
    return Pipeline.from_dict(data)


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,)), batch=BatchSimSettings(delay=0.3))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread, monkeypatch: pytest.MonkeyPatch) -> SimServerThread:
    server.configure(**SimServerSettings(api_keys=(KEY,)).model_dump())
    server._call(lambda: server.server.batch.configure(**BatchSimSettings(delay=0.3).model_dump()))
    server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    return server


def batch_stats(sim: SimServerThread) -> dict[str, Any]:
    return sim._call(sim.server.batch.stats)


def configure_batch(sim: SimServerThread, **changes: Any) -> None:
    sim._call(lambda: sim.server.batch.configure(**changes))


def outputs(out: Path) -> list[dict[str, str]]:
    return [r["outputs"] for r in read_results(out)]


def ledger(out: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(out / "run.db") as db:
        return db.execute(query).fetchall()


@pytest.mark.parametrize(("model", "n"), [("openai:gpt-4o-mini", 200), ("anthropic:claude-haiku-4-5", 30)])
def test_three_stages_in_batch_mode_give_the_online_outputs(
    sim: SimServerThread, tmp_path: Path, model: str, n: int
) -> None:
    items = topics(n)
    online = run(pipeline(model), items, concurrency=50)
    assert online.items_succeeded == n
    calls_online = sim.stats()["calls"]
    batch = run(pipeline(model), items, out=tmp_path / "batch", batch=True)
    assert batch.items_succeeded == n
    assert outputs(tmp_path / "batch") == [r.outputs for r in online.results()]
    stats = batch_stats(sim)
    assert stats["requests_submitted"] == 3 * n and stats["max_submissions_per_request"] == 1
    assert sim.stats()["calls"] == calls_online  # no one-call request in batch mode
    # chains are pipelined: stage 2 went out in chunks of its own, after stage 1's came back
    assert stats["jobs_created"] >= 3
    # half price: the same tokens cost half as much through the batch API
    assert batch.cost_usd == pytest.approx(online.cost_usd / 2, abs=2e-6)  # (rounded to 6 places)


def test_errored_and_expired_requests_are_resubmitted_on_their_own(
    sim: SimServerThread, tmp_path: Path
) -> None:
    configure_batch(sim, error_rate=0.15, expire_rate=0.15)
    report = run(pipeline("openai:gpt-4o-mini"), topics(40), out=tmp_path / "out", batch=True, max_attempts=6)
    assert report.items_succeeded == 40
    stats = batch_stats(sim)
    resubmitted = stats["requests_submitted"] - stats["distinct_requests"]
    failed_inside = stats["outcomes"]["errored"] + stats["outcomes"]["expired"]
    assert failed_inside > 8
    assert resubmitted == failed_inside  # exactly the errored and expired ones, each once more
    assert stats["outcomes"]["succeeded"] == 120  # no finished result was asked for again
    states = ledger(tmp_path / "out", "SELECT state, COUNT(*) FROM batch_requests GROUP BY state")
    assert dict(states) == {
        "succeeded": 120,
        **{k: v for k, v in stats["outcomes"].items() if k != "succeeded"},
    }
    assert report.calls["total"] == 120 + failed_inside  # each counted as an attempt
    section = read_report(tmp_path / "out")["batch"]
    assert section["requests"]["resubmitted"] == failed_inside
    assert section["request_ratio"] == pytest.approx((120 + failed_inside) / 120, abs=1e-4)


def test_failed_whole_batches_go_into_new_ones(sim: SimServerThread, tmp_path: Path) -> None:
    configure_batch(sim, fail_rate=0.4)
    report = run(pipeline("openai:gpt-4o-mini"), topics(20), out=tmp_path / "out", batch=True, max_attempts=8)
    assert report.items_succeeded == 20
    stats = batch_stats(sim)
    assert stats["failed_jobs"] >= 1
    assert ledger(tmp_path / "out", "SELECT COUNT(*) FROM batch_chunks WHERE state = 'failed'")[0][0] >= 1


def test_a_fatal_error_mid_run_stops_further_submissions(sim: SimServerThread, tmp_path: Path) -> None:
    """The key is revoked once stage 1 is back: what finished is kept, nothing more is sent."""
    stop = threading.Event()

    def revoke_after_stage_one() -> None:
        while not stop.is_set():
            try:
                kept = ledger(tmp_path / "out", "SELECT COUNT(*) FROM stage_results WHERE stage = 'research'")
            except sqlite3.Error:
                kept = [(0,)]
            if kept[0][0] >= 40:
                sim.configure(api_keys=("sk-another-key-000000000",))
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=revoke_after_stage_one, daemon=True)
    watcher.start()
    try:
        report = run(pipeline("openai:gpt-4o-mini"), topics(40), out=tmp_path / "out", batch=True)
    finally:
        stop.set()
        watcher.join()
    assert report.items_succeeded == 0 and report.exit_code == 2  # the key was refused
    assert report.stopped_kind == "auth_failed" and "401" in (report.stopped or "")
    jobs = batch_stats(sim)["jobs_created"]
    assert jobs <= 2  # stage 1's chunk, at most stage 2's before the key went; never stage 3
    kept = ledger(tmp_path / "out", "SELECT COUNT(*) FROM stage_results WHERE stage = 'research'")[0][0]
    assert kept == 40  # stage 1's results are in the store, for a resume
    assert KEY not in (tmp_path / "out" / "report.json").read_text()


def test_an_endpoint_without_batches_is_refused_before_anything_is_sent(
    sim: SimServerThread, tmp_path: Path
) -> None:
    configure_batch(sim, enabled=False)
    folder = write_run_files(tmp_path, 5)
    done = subprocess.run(
        [CHAINFLEET, "run", str(folder / "p.yaml"), "-i", str(folder / "t.txt"), "--out", str(tmp_path / "o")]
        + ["--batch", "-q"],
        env=child_env(sim),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "has no batch API" in done.stderr and "stage 'research'" in done.stderr
    assert sim.stats()["calls"] == 0 and batch_stats(sim)["jobs_created"] == 0


def write_run_files(folder: Path, n: int, delay: float = 0.2) -> Path:
    data = json.loads(json.dumps(FAST_PIPELINE))
    data.update(model="openai:gpt-4o-mini", batch={**FAST_BATCH, "window": 0.2})
    (folder / "p.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (folder / "t.txt").write_text("".join(f"{t}\n" for t in topics(n)), encoding="utf-8")
    return folder


def child_env(sim: SimServerThread) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "OPENAI_BASE_URL": f"{sim.url}/v1",
        "OPENAI_API_KEY": KEY,
    }


def submitted_chunks(out: Path) -> int:
    try:
        return ledger(out, "SELECT COUNT(*) FROM batch_chunks WHERE batch_id IS NOT NULL")[0][0]
    except sqlite3.Error:
        return 0


def test_kill_9_while_batches_are_in_flight_then_resume(sim: SimServerThread, tmp_path: Path) -> None:
    configure_batch(sim, delay=1.5)
    folder = write_run_files(tmp_path, 30)
    out = tmp_path / "out"
    args = [
        CHAINFLEET,
        "run",
        str(folder / "p.yaml"),
        "-i",
        str(folder / "t.txt"),
        "--out",
        str(out),
        "--batch",
        "-q",
    ]
    child = subprocess.Popen(
        args, env=child_env(sim), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    # kill once stage 2's chunk is in flight (stage 1 is back): the store and the server agree
    while time.monotonic() < deadline:
        stats = batch_stats(sim)
        if (
            stats["jobs_created"] >= 2
            and stats["jobs_in_progress"] >= 1
            and submitted_chunks(out) == stats["jobs_created"]
        ):
            break
        time.sleep(0.02)
    else:
        child.kill()
        pytest.fail("no batch in flight within 60 s")
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    before = batch_stats(sim)
    assert before["jobs_in_progress"] >= 1
    resumed = subprocess.run(
        [CHAINFLEET, "resume", str(out), "-q"], env=child_env(sim), capture_output=True, text=True, timeout=90
    )
    assert resumed.returncode == 0, resumed.stderr
    after = batch_stats(sim)
    assert after["max_submissions_per_request"] == 1  # no request, so no chunk, submitted twice
    assert after["requests_submitted"] == after["distinct_requests"] == 90
    results = read_results(out)
    assert [r["status"] for r in results] == ["succeeded"] * 30
    assert all(r["outputs"]["edit"] for r in results)


def test_batch_from_the_command_line_on_sim_offline(tmp_path: Path) -> None:
    data = json.loads(json.dumps(FAST_PIPELINE))
    data.update(mode="batch", batch=FAST_BATCH)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (tmp_path / "t.txt").write_text("".join(f"{t}\n" for t in topics(10)), encoding="utf-8")
    out = tmp_path / "out"
    args = [CHAINFLEET, "run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "t.txt"), "--out", str(out)]
    done = subprocess.run(
        args, env={"PATH": os.environ.get("PATH", "")}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "batches 3 submitted (0 in progress, 3 done, 0 failed); requests 30 for 30 calls" in done.stdout
    assert read_report(out)["batch"]["requests"]["succeeded"] == 30


def test_a_kill_after_the_batch_was_created_but_before_its_id_was_kept_pays_nothing_twice(
    sim: SimServerThread, tmp_path: Path
) -> None:
    folder = write_run_files(tmp_path, 12)
    out = tmp_path / "out"
    args = [CHAINFLEET, "run", str(folder / "p.yaml"), "-i", str(folder / "t.txt"), "--out", str(out)]
    killed = subprocess.run(
        [*args, "--batch", "-q"],
        env={**child_env(sim), "CHAINFLEET_TEST_KILL_AT": "batch-created"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL
    assert batch_stats(sim)["jobs_created"] == 1  # the provider has it; the store has no id
    assert submitted_chunks(out) == 0
    resumed = subprocess.run(
        [CHAINFLEET, "resume", str(out), "-q"], env=child_env(sim), capture_output=True, text=True, timeout=90
    )
    assert resumed.returncode == 0, resumed.stderr
    after = batch_stats(sim)
    assert after["max_submissions_per_request"] == 1  # the first chunk was found, not sent again
    assert after["requests_submitted"] == after["distinct_requests"] == 36
    assert [r["status"] for r in read_results(out)] == ["succeeded"] * 12
    states = ledger(out, "SELECT state FROM batch_chunks ORDER BY created, rowid")
    assert states[0] == ("ended",)  # the adopted chunk, polled and read like any other
