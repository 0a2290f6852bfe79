"""The Python door from the command line: ``chainfleet run my_chain.py:article``, killed with
SIGKILL mid-run and resumed, and parked for review and resumed after the decisions.

The chain files are written into the test's folder and point the openai SDK at a sim-server on
127.0.0.1 (``SIM_URL`` in the child's environment); the sim-server counts each distinct request
it answered (``completed_by_key``), which shows any call made twice.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chainfleet.sim.call import completion_key
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from waiting import wait_until

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
KEY = "sk-sim-own-chain-cli-0123456789"
MODEL = "gpt-4o-mini"
STAGES = ("research", "write", "edit")

CHAIN = """\
import os

import chainfleet


async def article(topic, fleet):
    client = fleet.openai(base_url=os.environ["SIM_URL"] + "/v1", api_key=os.environ["SIM_KEY"])
    text = ""
    for stage in ("research", "write", "edit"):
        with fleet.stage(stage):
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"{stage}: {topic}"}]
            )
        text = reply.choices[0].message.content
    return text


async def reviewed(topic, fleet):
    client = fleet.openai(base_url=os.environ["SIM_URL"] + "/v1", api_key=os.environ["SIM_KEY"])
    reply = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"draft: {topic}"}]
    )
    decision = await fleet.review("draft", f"DRAFT {topic}: " + reply.choices[0].message.content[:40])
    if not decision.approved:
        return "REJECTED because " + decision.note
    return decision.text
"""


@pytest.fixture
def sim() -> Any:
    with SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0.15)) as server:
        yield server


def env(sim: Any) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        keep.pop(name, None)
    return {**keep, "SIM_URL": sim.url, "SIM_KEY": KEY}


def journaled(db: Path) -> list[tuple[int, str]]:
    """(item index, stage) of every journaled call committed in ``db``."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return [(int(i), str(s)) for i, s in con.execute("SELECT idx, stage FROM journal")]
    except sqlite3.Error:
        return []


def test_killed_with_sigkill_then_resumed_no_journaled_call_is_made_twice(sim: Any, tmp_path: Path) -> None:
    (tmp_path / "chain.py").write_text(CHAIN, encoding="utf-8")
    topics = [f"topic {i}" for i in range(12)]
    (tmp_path / "topics.txt").write_text("".join(t + "\n" for t in topics), encoding="utf-8")
    out = tmp_path / "out"
    args = [CHAINFLEET, "run", str(tmp_path / "chain.py") + ":article", "-i", str(tmp_path / "topics.txt")]
    with (tmp_path / "stderr.txt").open("wb") as err:
        proc = subprocess.Popen(
            [*args, "-c", "2", "--out", str(out), "-q"], env=env(sim), stdout=subprocess.DEVNULL, stderr=err
        )
        wait_until(
            lambda: len(journaled(out / "run.db")) >= 8 or proc.poll() is not None,
            "the run did not get that far",
            120,
        )
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    before = journaled(out / "run.db")
    assert len(before) < 36  # killed mid-run

    resumed = subprocess.run(
        [CHAINFLEET, "resume", str(out), "-q"], env=env(sim), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [row["status"] for row in rows] == ["succeeded"] * 12
    counts = sim.stats()["completed_by_key"]
    for index, stage in before:
        key = completion_key(MODEL, "", f"{stage}: {topics[index]}")
        assert counts[key] == 1, f"journaled call {stage} of item {index} was made again"
    assert len(counts) == 36


def test_review_parks_the_item_and_resume_returns_the_decision(sim: Any, tmp_path: Path) -> None:
    (tmp_path / "chain.py").write_text(CHAIN, encoding="utf-8")
    (tmp_path / "topics.txt").write_text("tea\ncoffee\ncocoa\n", encoding="utf-8")
    out = tmp_path / "out"
    target = str(tmp_path / "chain.py") + ":reviewed"
    first = subprocess.run(
        [CHAINFLEET, "run", target, "-i", str(tmp_path / "topics.txt"), "--out", str(out), "-q"],
        env=env(sim),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert first.returncode == 3, first.stderr  # items wait for review
    listed = subprocess.run([CHAINFLEET, "review", str(out), "--list"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("draft") >= 3
    ids = [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]
    decide = [CHAINFLEET, "review", str(out)]
    assert subprocess.run([*decide, ids[0], ids[1], "--approve"], capture_output=True).returncode == 0
    rejected = subprocess.run(
        [*decide, "--reject", ids[2], "--note", "too short"], capture_output=True, text=True
    )
    assert rejected.returncode == 0, rejected.stderr
    calls_before = sim.stats()["ok"]

    resumed = subprocess.run(
        [CHAINFLEET, "resume", str(out), "-q"], env=env(sim), capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    assert rows[0]["outputs"]["reviewed"].startswith("DRAFT tea: ")
    assert rows[2]["outputs"]["reviewed"] == "REJECTED because too short"
    assert sim.stats()["ok"] == calls_before  # every call replayed from the journal
    report = json.loads((out / "report.json").read_text())
    assert report["replayed_calls"] == 3
