"""Routes on ``--backend ray`` (issue 23): two sim-servers standing for two keys, a local Ray
node with two workers, runs through the Python API (``arun(..., backend="ray")``, this
checkout's code in the workers too):

- spill: the first server's 120/min is full long before the run is done; calls go to the second
  before the first refuses them (its 429s stay within 1%): the workers lease each target's
  budget from one limiter actor per target, so they decide on the cluster's view;
- fallback: the first server stopped mid-run, every worker hands its calls to the second;
- the report's routes section counts each target's calls as its server does, and neither
  target's key appears in the run's files.

Counts and behaviour only: no rate or wall time is asserted (the machine is shared).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet.pipeline import Pipeline
from chainfleet.runner.api import arun
from chainfleet.sim.server import SimServerSettings, SimServerThread
from conftest import read_report, read_results
from waiting import wait_until

if importlib.util.find_spec("ray") is None:
    if os.environ.get("CI"):
        pytest.fail("CI: Ray is not installed (pip install -e '.[ray]')", pytrace=False)
    pytest.skip("Ray is not installed (pip install 'chainfleet[ray]')", allow_module_level=True)

KEY_A = "sk-canary-rayroute-A-5d1c0e9f8a7b"
KEY_B = "sk-canary-rayroute-B-3e2f4a6b8c0d"
A, B = "openai:gpt-4o-mini (KEY_A)", "openai:gpt-4o-mini (KEY_B)"


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_A", KEY_A)
    monkeypatch.setenv("KEY_B", KEY_B)


@pytest.fixture
def servers() -> Iterator[tuple[SimServerThread, SimServerThread]]:
    a = SimServerThread(SimServerSettings(api_keys=(KEY_A,), latency=0.02, rpm=120))
    b = SimServerThread(SimServerSettings(api_keys=(KEY_B,), latency=0.02))
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


def route_files(folder: Path, a: str, b: str, route: str, items: int) -> tuple[Pipeline, Path]:
    pipeline = folder / "p.yaml"
    pipeline.write_text(
        "model: fast\ninput: topic\nroutes:\n  fast:\n" + route + "    targets:\n"
        f"      - {{model: openai:gpt-4o-mini, api_key_env: KEY_A, base_url: '{a}/v1'}}\n"
        f"      - {{model: openai:gpt-4o-mini, api_key_env: KEY_B, base_url: '{b}/v1'}}\n"
        "stages:\n  - {name: a, prompt: 'A {{ topic }}', max_tokens: 20}\n",
        encoding="utf-8",
    )
    topics = folder / "t.txt"
    topics.write_text("".join(f"topic {i}\n" for i in range(items)), encoding="utf-8")
    return Pipeline.from_yaml(pipeline), topics


def ray_run(pipeline: Pipeline, topics: Path, out: Path, concurrency: int) -> Any:
    return asyncio.run(arun(pipeline, topics, out=out, concurrency=concurrency, backend="ray", workers=2))


def test_spill_on_ray_moves_calls_before_the_first_target_refuses_them(
    ray_node: str, keys: None, servers: tuple[SimServerThread, SimServerThread], tmp_path: Path
) -> None:
    a, b = servers
    pipeline, topics = route_files(tmp_path, a.url, b.url, "    policy: spill\n", 80)
    report = ray_run(pipeline, topics, tmp_path / "out", concurrency=20)
    assert report.items_succeeded == 80
    first, second = a.stats(), b.stats()
    assert second["ok"] >= 40  # the spill: 120/min could not have served 80 calls in the run
    assert first["rate_limited"] <= max(1, first["calls"] // 100)  # <= 1%: moved before a 429
    route = read_report(tmp_path / "out")["routes"]["fast"]
    by_label = {t["label"]: t for t in route["targets"]}
    # the workers' counts reach the driver's report: each target's as its server counted it
    assert (by_label[A]["ok"], by_label[B]["ok"]) == (first["ok"], second["ok"])
    assert by_label[A]["rate_limited"] == first["rate_limited"]
    assert by_label[A]["calls"] + by_label[B]["calls"] == first["calls"] + second["calls"]
    assert by_label[B]["input_tokens"] > 0 and by_label[B]["output_tokens"] > 0
    spilled = [m for m in route["moves"] if m["kind"] == "spilled"]
    assert spilled and spilled[0]["to"] == B and spilled[0]["calls"] >= 40
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert f"spilled {spilled[0]['calls']:,} calls to {B} while {A} was full" in text
    for path in (tmp_path / "out").rglob("*"):  # the keys went to the workers, and nowhere else
        if path.is_file():
            data = path.read_bytes()
            assert KEY_A.encode() not in data and KEY_B.encode() not in data, path


def test_fallback_on_ray_hands_every_workers_calls_to_the_next_target_when_one_dies(
    ray_node: str, keys: None, servers: tuple[SimServerThread, SimServerThread], tmp_path: Path
) -> None:
    a, b = servers
    a.configure(rpm=None)
    policy = "    policy: fallback\n    out_after: 2\n    probe_after: 600\n"
    pipeline, topics = route_files(tmp_path, a.url, b.url, policy, 60)
    served: dict[str, int] = {}

    def kill_a() -> None:  # once the first server has answered some calls, it dies
        wait_until(lambda: a.stats()["ok"] >= 10, "the first server never answered 10 calls", 120)
        a.stop()
        served["a"] = a.stats()["ok"]

    killer = threading.Thread(target=kill_a, daemon=True)
    killer.start()
    report = ray_run(pipeline, topics, tmp_path / "out", concurrency=4)
    killer.join()
    assert report.items_succeeded == 60 and report.items_failed == 0
    assert [r["status"] for r in read_results(tmp_path / "out")] == ["succeeded"] * 60
    route = read_report(tmp_path / "out")["routes"]["fast"]
    by_label = {t["label"]: t for t in route["targets"]}
    assert by_label[A]["ok"] == served["a"] and by_label[B]["ok"] == b.stats()["ok"]
    assert by_label[A]["ok"] + by_label[B]["ok"] == 60  # every item once, on one target or the other
    assert b.stats()["ok"] >= 60 - served["a"] > 0
    fell = [m for m in route["moves"] if m["kind"] == "fell back"]
    assert fell and {m["to"] for m in fell} == {B}
    assert {m["reason"] for m in fell} == {"out of service: connection_failed"}
    assert sum(m["calls"] for m in fell) == by_label[B]["calls"]
