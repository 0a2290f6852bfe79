"""One owner per output folder: a second process is refused at once and pays for nothing, and a
folder that is not a run is never touched. Real processes against the sim-server, which counts
every call it answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from chainfleet.store.folder import LOCK_NAME, held, owner
from waiting import wait_until

KEY = "sk-folder-test-0123456789"
CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
ITEMS = 12
PIPELINE = """\
name: content
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}."
    max_tokens: 100
  - name: write
    prompt: "Write on {{ topic }} from:\\n{{ research }}"
    max_tokens: 100
"""


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0.02))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread) -> SimServerThread:
    server.configure(**SimServerSettings(api_keys=(KEY,), latency=0.02).model_dump())
    server.reset()
    return server


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    pipeline = tmp_path / "content.yaml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    topics = tmp_path / "topics.txt"
    topics.write_text("".join(f"topic {i}\n" for i in range(1, ITEMS + 1)), encoding="utf-8")
    return str(pipeline), str(topics)


def command(sim: SimServerThread, *args: str) -> subprocess.Popen[str]:
    env = {"PATH": os.environ.get("PATH", ""), "OPENAI_BASE_URL": f"{sim.url}/v1", "OPENAI_API_KEY": KEY}
    quiet = ["-q"] if args[0] in ("run", "resume") else []
    return subprocess.Popen(
        [CHAINFLEET, *args, *quiet], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def second_attempts(sim: SimServerThread, files: tuple[str, str], out: Path) -> list[tuple[int, str]]:
    """A fresh run, a ``run --resume`` and a ``resume`` on ``out``, all at once."""
    pipeline, topics = files
    procs = [
        command(sim, "run", pipeline, "-i", topics, "--out", str(out)),
        command(sim, "run", pipeline, "-i", topics, "--out", str(out), "--resume"),
        command(sim, "resume", str(out)),
    ]
    results = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=60)
        results.append((proc.returncode, stderr))
    return results


@pytest.mark.parametrize("first", ["run", "resume"])
def test_a_second_process_on_a_live_folder_is_refused_and_nothing_is_paid_twice(
    sim: SimServerThread, files: tuple[str, str], tmp_path: Path, first: str
) -> None:
    pipeline, topics = files
    out = tmp_path / "out"
    if first == "resume":  # a run stopped gracefully part-way, then resumed: the resume is live
        proc = command(sim, "run", pipeline, "-i", topics, "-c", "2", "--out", str(out))
        wait_until(lambda: sim.stats()["ok"] >= 4, "the first run did not start")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 130
    sim.configure(latency=3.0)  # the live run's calls stay in flight while the others try
    if first == "resume":
        live = command(sim, "resume", str(out))
    else:
        live = command(sim, "run", pipeline, "-i", topics, "-c", "2", "--out", str(out))
    wait_until(
        lambda: (o := owner(out)) is not None and o.pid == live.pid, "the live run never took the folder"
    )
    attempts = second_attempts(sim, files, out)
    assert live.poll() is None, "the live run ended before the others tried: the test proves nothing"
    sim.configure(latency=0.02)
    _, stderr = live.communicate(timeout=120)
    assert live.returncode == 0, stderr
    for code, message in attempts:
        assert code == 2, message
        assert f"{out}: is in use by pid {live.pid} since " in message
        assert "Traceback" not in message
    paid = sim.stats()["completed_by_key"]
    assert sum(paid.values()) == 2 * ITEMS and all(n == 1 for n in paid.values()), paid
    assert owner(out) is None  # the live run ended: the folder is free again


def test_a_folder_that_is_not_a_run_is_refused_untouched_unless_forced(
    sim: SimServerThread, files: tuple[str, str], tmp_path: Path
) -> None:
    pipeline, topics = files
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.jsonl").write_text("my own data\n", encoding="utf-8")
    (mine / "report.md").write_text("# my report\n", encoding="utf-8")
    proc = command(sim, "run", pipeline, "-i", topics, "--out", str(mine))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert f"{mine}: is not empty and holds no chainfleet run" in stderr and "--force" in stderr
    assert sorted(p.name for p in mine.iterdir()) == ["report.md", "results.jsonl"]
    assert (mine / "results.jsonl").read_text(encoding="utf-8") == "my own data\n"
    assert sim.stats()["completed_by_key"] == {}
    forced = command(sim, "run", pipeline, "-i", topics, "--out", str(mine), "--force")
    _, stderr = forced.communicate(timeout=60)
    assert forced.returncode == 0, stderr
    assert len((mine / "results.jsonl").read_text(encoding="utf-8").splitlines()) == ITEMS


def test_report_and_resume_are_refused_while_another_process_holds_the_folder(
    sim: SimServerThread, files: tuple[str, str], tmp_path: Path
) -> None:
    pipeline, topics = files
    out = tmp_path / "out"
    proc = command(sim, "run", pipeline, "-i", topics, "--out", str(out))
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    before = (out / "results.jsonl").read_bytes()
    with held(out):  # this test process owns the folder now
        for args in (["report", str(out)], ["resume", str(out)]):
            other = command(sim, *args)
            _, stderr = other.communicate(timeout=60)
            assert other.returncode == 2, stderr
            assert f"is in use by pid {os.getpid()} since " in stderr
    assert (out / "results.jsonl").read_bytes() == before
    assert (out / LOCK_NAME).exists()
    again = command(sim, "report", str(out))
    again.communicate(timeout=60)
    assert again.returncode == 0  # released: the report is rewritten
