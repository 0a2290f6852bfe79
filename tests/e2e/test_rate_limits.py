"""Rate limits end to end: real ``chainfleet run`` processes against the sim server, judged by
the server's own counts.

- the start-up burst: told nothing, 30 chains at once against a strict server (at most 20 calls
  in any second): the first wave used to draw 10 429s; slow start sends one probe first;
- two processes on one key, each told nothing, on the three server models (sliding windows,
  a minute's bucket, a second's bucket): both finish, few 429s, and each report says another
  job shared the key;
- a server that queues (4 slots): ``-c auto`` stays near the slots instead of climbing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-rate-e2e-0123456789"
CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
SRC = str(Path(__file__).resolve().parents[2] / "src")
PIPELINE = """\
name: rates
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


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,)))
    sim.start()
    yield sim
    sim.stop()


def configure(sim: SimServerThread, **settings: object) -> SimServerThread:
    sim.configure(**{**SimServerSettings(api_keys=(KEY,)).model_dump(), **settings})
    sim.reset()
    return sim


def files(tmp_path: Path, chains: int, name: str = "topics.txt") -> tuple[str, str]:
    pipeline = tmp_path / "rates.yaml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    topics = tmp_path / name
    topics.write_text("".join(f"{name} topic {i}\n" for i in range(chains)), encoding="utf-8")
    return str(pipeline), str(topics)


def start(sim: SimServerThread, *args: str) -> subprocess.Popen[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": SRC,  # the children run this tree's code, not an installed copy's
        "OPENAI_BASE_URL": f"{sim.url}/v1",
        "OPENAI_API_KEY": KEY,
    }
    return subprocess.Popen(
        [CHAINFLEET, "run", *args, "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen[str]) -> int:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return proc.returncode


def model_facts(out: Path) -> dict[str, object]:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    facts: dict[str, object] = report["rates"]["models"]["openai:gpt-sim"]
    return facts


def test_told_nothing_the_first_wave_is_one_probe_not_a_burst(
    server: SimServerThread, tmp_path: Path
) -> None:
    sim = configure(server, rpm=1200, window=1.0, latency=0.05)
    pipeline, topics = files(tmp_path, 30)
    finish(start(sim, pipeline, "-i", topics, "-c", "30", "--out", str(tmp_path / "out")))
    stats = sim.stats()
    assert stats["ok"] == 60
    # without slow start the first 30 calls met a window of 20: 10 429s, every time
    assert stats["status"].get("429", 0) <= 2
    facts = model_facts(tmp_path / "out")
    assert facts["learned_from"] == "the server's headers" and facts["probes"] == 1


@pytest.mark.parametrize(
    "model",
    [
        {"rpm": 2400, "window": 1.0},  # a minute over 1-second windows (remaining counts the minute)
        {"rpm": 1200},  # a minute's bucket paced by one of 2 s (remaining is about the limit)
        {"rpm": 1200, "bucket_seconds": 1.0},  # a bucket of a second (remaining is its level)
    ],
    ids=["window", "minute", "second"],
)
def test_two_processes_on_one_key_both_finish_and_know_they_shared(
    server: SimServerThread, tmp_path: Path, model: dict[str, float]
) -> None:
    """On each of issue 23's server models: on the two buckets the headers say nothing of
    the minute, and each report said nobody else used the key."""
    sim = configure(server, **model, latency=0.05)
    first = files(tmp_path, 30, "first.txt")
    second = files(tmp_path, 30, "second.txt")
    procs = [
        start(sim, first[0], "-i", first[1], "-c", "20", "--out", str(tmp_path / "a")),
        start(sim, second[0], "-i", second[1], "-c", "20", "--out", str(tmp_path / "b")),
    ]
    for proc in procs:
        finish(proc)
    stats = sim.stats()
    assert stats["ok"] == 120  # every item of both jobs
    # uncoordinated, their first second alone draws about half their calls as 429s; the
    # issue's 5% is measured by benchmarks/rate_limits.py (a test on a loaded machine keeps a margin)
    assert stats["status"].get("429", 0) <= 0.15 * stats["calls"]
    for out in ("a", "b"):
        facts = model_facts(tmp_path / out)
        assert facts["shared"] is True
        assert isinstance(facts["others_pct"], float) and facts["others_pct"] >= 5


def test_auto_on_a_server_that_queues_stays_near_its_slots(server: SimServerThread, tmp_path: Path) -> None:
    sim = configure(server, slots=4, latency=0.1)
    pipeline, topics = files(tmp_path, 80)
    finish(
        start(
            sim, pipeline, "-i", topics, "-c", "auto", "--max-concurrency", "48", "--out", str(tmp_path / "q")
        )
    )
    report = json.loads((tmp_path / "q" / "report.json").read_text(encoding="utf-8"))
    assert report["items"]["succeeded"] == 80
    # refusal-only AIMD never hears a refusal here and climbed to 3x the slots and more
    assert report["concurrency_peak"] < 12
