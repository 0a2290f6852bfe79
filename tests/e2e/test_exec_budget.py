"""``chainfleet exec`` with ``--model``, ``--max-cost`` and ``--prices`` (the same meaning as for
``run``), and what its report says one at a time would take: the items' own times, not only
their calls'. A Python script with the openai SDK is the command; the sim-server on 127.0.0.1
is the provider and counts what it answered."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet.sim.call import completion_key
from chainfleet.sim.server import SimServerSettings, SimServerThread
from exec_cli import KEY, chainfleet

#: one call, then the process goes on working (0.4 s) before it prints its answer
CHAIN = """\
import os
import sys
import time

import openai

client = openai.OpenAI(max_retries=0)
reply = client.chat.completions.create(
    model=os.environ.get("CHAIN_MODEL", "gpt-4o-mini"),
    messages=[{"role": "user", "content": f"Write on {sys.argv[1]}."}],
)
time.sleep(0.4)
print(reply.choices[0].message.content, end="")
"""
TOPICS = [f"topic {i}" for i in range(6)]


@pytest.fixture
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0)) as server:
        yield server


def setup(tmp_path: Path) -> tuple[Path, Path]:
    chain = tmp_path / "chain.py"
    chain.write_text(CHAIN)
    topics = tmp_path / "topics.txt"
    topics.write_text("".join(f"{topic}\n" for topic in TOPICS))
    return chain, topics


def exec_args(chain: Path, topics: Path, out: Path, *options: str) -> list[str]:
    return [
        "exec",
        "-i",
        str(topics),
        "-c",
        "3",
        "-o",
        str(out),
        "-q",
        *options,
        "--",
        sys.executable,
        str(chain),
        "{topic}",
    ]


def report(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return data


def test_model_sends_the_commands_calls_to_another_model(sim: SimServerThread, tmp_path: Path) -> None:
    chain, topics = setup(tmp_path)
    out = tmp_path / "out"
    proc = chainfleet(sim, *exec_args(chain, topics, out, "--model", "openai:gpt-4.1-nano"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    counts = sim.stats()["completed_by_key"]
    assert set(counts) == {completion_key("gpt-4.1-nano", "", f"Write on {topic}.") for topic in TOPICS}
    assert list(report(out)["rates"]["models"]) == ["openai:gpt-4.1-nano"]


def test_model_for_an_exec_is_a_providers_model(sim: SimServerThread, tmp_path: Path) -> None:
    chain, topics = setup(tmp_path)
    proc = chainfleet(sim, *exec_args(chain, topics, tmp_path / "out", "--model", "sim"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --model: for your own chain")
    assert sim.stats()["ok"] == 0


def test_max_cost_with_an_unpriced_model_is_refused_before_anything_runs(
    sim: SimServerThread, tmp_path: Path
) -> None:
    chain, topics = setup(tmp_path)
    args = exec_args(chain, topics, tmp_path / "out", "--model", "openai:house-model", "--max-cost", "1")
    proc = chainfleet(sim, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "cannot be enforced: no price is known for openai:house-model" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sim.stats()["ok"] == 0


def test_max_cost_stops_the_run_at_the_first_call_to_an_unpriced_model(
    sim: SimServerThread, tmp_path: Path
) -> None:
    """Without --model the models are known only as the command calls them: the first call to
    one without a price is not made, and the run stops (exit 2) saying which model."""
    chain, topics = setup(tmp_path)
    out = tmp_path / "out"
    proc = chainfleet(
        sim, *exec_args(chain, topics, out, "--max-cost", "1"), cwd=tmp_path, CHAIN_MODEL="house-model"
    )
    assert proc.returncode == 2, proc.stderr
    assert "no price is known for 'openai:house-model'" in proc.stdout + proc.stderr
    assert sim.stats()["ok"] == 0


def test_max_cost_stops_admission_when_the_budget_is_spent(sim: SimServerThread, tmp_path: Path) -> None:
    """Priced (by --prices) so each item's one call costs about a cent: a budget of two cents
    lets a few items in and stops admitting the rest."""
    chain, topics = setup(tmp_path)
    prices = tmp_path / "prices.yaml"
    prices.write_text("openai:house-model: {input: 200000, output: 200000}\n")
    out = tmp_path / "out"
    args = exec_args(chain, topics, out, "--max-cost", "0.02", "--prices", str(prices))
    proc = chainfleet(sim, *args, cwd=tmp_path, CHAIN_MODEL="house-model")
    data = report(out)
    assert data["stopped"] and "budget" in data["stopped"], proc.stderr
    assert 0 < data["items"]["succeeded"] < len(TOPICS), data["items"]
    assert sim.stats()["ok"] == data["items"]["succeeded"]
    assert data["cost_usd"] > 0


def test_one_at_a_time_is_the_sum_of_the_items_times(sim: SimServerThread, tmp_path: Path) -> None:
    """Each item's process works 0.4 s after its one call (at zero latency): one at a time is
    at least 6 x 0.4 s, whatever its calls took; the old sum of call latencies said far less."""
    chain, topics = setup(tmp_path)
    out = tmp_path / "out"
    proc = chainfleet(sim, *exec_args(chain, topics, out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = report(out)
    estimate = data["sequential_estimate"]
    assert estimate["method"] == "items"
    assert data["sequential_seconds"] >= len(TOPICS) * 0.4
    items = [json.loads(line)["seconds"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(seconds >= 0.4 for seconds in items), items
    assert data["sequential_seconds"] == pytest.approx(sum(items), rel=0.01, abs=0.01)
    assert "one at a time would take" in (out / "report.md").read_text()
