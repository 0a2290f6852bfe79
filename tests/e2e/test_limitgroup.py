"""``--limit-group NAME`` in real processes: a group name that cannot name a file is refused
before any call, and two processes in one group keep to the key's limit together (judged by
the sim server's own counts)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-limit-group-0123456789"

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")

PIPELINE = """\
name: grouped
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}."
    max_tokens: 60
  - name: write
    prompt: "Write on {{ topic }} from:\\n{{ research }}"
    max_tokens: 60
"""


def test_a_group_name_that_cannot_name_a_file_is_refused_before_any_call(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    topics = tmp_path / "t.txt"
    topics.write_text("tea\n", encoding="utf-8")
    proc = subprocess.run(
        [CHAINFLEET, "run", str(pipeline), "-i", str(topics), "--limit-group", "../etc", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": os.environ.get("PATH", ""),
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        },
    )
    assert proc.returncode == 2
    assert "--limit-group '../etc'" in proc.stderr


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,), rpm=2400, window=1.0, latency=0.05))
    sim.start()
    yield sim
    sim.stop()


def test_two_processes_in_one_group_keep_to_the_limit_together(
    server: SimServerThread, tmp_path: Path
) -> None:
    server.reset()
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "OPENAI_BASE_URL": f"{server.url}/v1",
        "OPENAI_API_KEY": KEY,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    procs = []
    for name in ("a", "b"):
        topics = tmp_path / f"{name}.txt"
        topics.write_text("".join(f"{name} topic {i}\n" for i in range(30)), encoding="utf-8")
        args = [str(pipeline), "-i", str(topics), "--limit-group", "team"]
        procs.append(
            subprocess.Popen(
                [CHAINFLEET, "run", *args, "-c", "20", "--out", str(tmp_path / name), "-q"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    stats = server.stats()
    assert stats["ok"] == 120
    # each learns the whole limit: alone, each would send 39/s (the first second alone would
    # draw ~40 refusals); in the group they send 39/s together, and the few 429s left are the
    # network bunching calls against a strict 1-second window
    assert stats["status"].get("429", 0) <= 0.05 * stats["calls"]
    assert (tmp_path / "cache" / "chainfleet" / "limits" / "team.json").exists()
