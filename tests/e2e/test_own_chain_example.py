"""examples/own_chain.py, as its docstring runs it: ``chainfleet run examples/own_chain.py:article``
over examples/topics.txt against the sim-server, then ``chainfleet compare`` on the same code."""

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

ROOT = Path(__file__).resolve().parents[2]
CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
KEY = "sk-sim-own-example-0123456789"


@pytest.fixture
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,))) as server:
        yield server


def env(sim: SimServerThread) -> dict[str, str]:
    keep = {
        k: v for k, v in os.environ.items() if "PROXY" not in k.upper() and not k.startswith("ANTHROPIC_")
    }
    return {**keep, "OPENAI_BASE_URL": f"{sim.url}/v1", "OPENAI_API_KEY": KEY}


def test_the_example_runs_over_the_topics(sim: SimServerThread, tmp_path: Path) -> None:
    out = tmp_path / "own"
    args = [
        "run",
        str(ROOT / "examples" / "own_chain.py") + ":article",
        "-i",
        str(ROOT / "examples" / "topics.txt"),
    ]
    done = subprocess.run(
        [CHAINFLEET, *args, "-c", "10", "--out", str(out), "-q"],
        env=env(sim),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(row["status"] == "succeeded" for row in rows)
    output = rows[0]["outputs"]["article"]
    assert output["article"] and len(output["sources"]) == 3 and 1 <= output["rounds"] <= 3
    report = json.loads((out / "report.json").read_text())
    assert list(report["stages"]) == ["research", "write", "edit"]
    assert report["calls"]["total"] == sim.stats()["ok"]


def test_compare_runs_the_code_one_at_a_time_then_in_parallel(sim: SimServerThread, tmp_path: Path) -> None:
    topics = tmp_path / "topics.txt"
    topics.write_text("tea\ncoffee\ncocoa\n", encoding="utf-8")
    out = tmp_path / "compare"
    target = str(ROOT / "examples" / "own_chain.py") + ":article"
    done = subprocess.run(
        [CHAINFLEET, "compare", target, "-i", str(topics), "-c", "3", "--out", str(out), "-q"],
        env=env(sim),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Outputs identical between the two modes: yes" in done.stdout
    for mode in ("sequential", "parallel"):
        rows = [json.loads(line) for line in (out / mode / "results.jsonl").read_text().splitlines()]
        assert [row["status"] for row in rows] == ["succeeded"] * 3
