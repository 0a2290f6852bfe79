"""``chainfleet exec`` stopped and started again: kill -9 mid-run then ``chainfleet resume``, and
Ctrl-C then resume. Each item's command runs again from the top, and every call the journal
holds is answered from the run store: the sim-server's counts show no journaled call made
twice. And ``--compare``: one at a time, then N at once, both really calling."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet.sim.server import SimServerSettings, SimServerThread
from exec_cli import KEY, chainfleet, start
from waiting import wait_until

ITEMS = 8
CALLS = 3  # per item

CHAIN = """\
import sys
import openai

topic = sys.argv[1]
client = openai.OpenAI(max_retries=0)
text = topic
for stage in ("research", "write", "edit"):
    text = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"{stage}: {text[:200]}"}]
    ).choices[0].message.content
print(text, end="")
"""


@pytest.fixture
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0.15)) as server:
        yield server


@pytest.fixture
def run_args(tmp_path: Path) -> list[str]:
    topics = tmp_path / "topics.txt"
    topics.write_text("".join(f"topic {n}\n" for n in range(ITEMS)))
    chain = tmp_path / "chain.py"
    chain.write_text(CHAIN)
    return [
        "-i",
        str(topics),
        "-c",
        "2",
        "-o",
        str(tmp_path / "out"),
        "--",
        sys.executable,
        str(chain),
        "{input}",
    ]


def wait_for(sim: SimServerThread, ok: int) -> None:
    wait_until(lambda: sim.stats()["ok"] >= ok, "the run did not get that far")


def settle(sim: SimServerThread) -> int:
    """The sim-server's successful answers once nothing is in flight any more."""
    wait_until(lambda: not sim.stats()["in_flight"], "calls stayed in flight", timeout=30)
    return int(sim.stats()["ok"])


def journaled(out: Path) -> int:
    with sqlite3.connect(f"file:{out / 'run.db'}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM journal").fetchone()[0])


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_kill_9_then_resume_makes_no_journaled_call_twice(
    sim: SimServerThread, tmp_path: Path, run_args: list[str]
) -> None:
    out = tmp_path / "out"
    proc = start(sim, "exec", "-q", *run_args, cwd=tmp_path)
    wait_for(sim, 7)

    proc.send_signal(signal.SIGKILL)  # chainfleet alone: its children lose the proxy and end
    proc.communicate(timeout=30)  # reaped, its pipes closed
    made = settle(sim)
    kept = journaled(out)
    assert 0 < kept <= made

    resumed = chainfleet(sim, "resume", str(out), "-q", cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stderr
    assert [row["status"] for row in results(out)] == ["succeeded"] * ITEMS
    # every call is made once, except those answered but not yet journaled when the process died
    assert sim.stats()["ok"] == ITEMS * CALLS + (made - kept)
    assert made - kept <= 2  # at most one call in flight per chain (-c 2)
    data = json.loads((out / "report.json").read_text())
    assert data["calls"]["total"] >= ITEMS * CALLS - kept


def test_ctrl_c_lets_the_commands_finish_then_resume_goes_on(
    sim: SimServerThread, tmp_path: Path, run_args: list[str]
) -> None:
    out = tmp_path / "out"
    relative = [arg if arg != str(tmp_path / "chain.py") else "chain.py" for arg in run_args]
    proc = start(sim, "exec", *relative, cwd=tmp_path)  # the command's file named from its folder
    wait_for(sim, 4)

    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    assert "Ctrl-C received: stopping: no new items or stages; finishing the" in stderr
    stopped = results(out)
    finished = [row for row in stopped if row["status"] == "succeeded"]
    assert finished and len(finished) < ITEMS
    assert settle(sim) == journaled(out)  # the commands in flight finished: every call is kept

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = chainfleet(sim, "resume", str(out), "-q", cwd=elsewhere)  # runs where it was started

    assert resumed.returncode == 0, resumed.stderr
    assert [row["status"] for row in results(out)] == ["succeeded"] * ITEMS
    assert sim.stats()["ok"] == ITEMS * CALLS  # nothing called twice
    assert all(count == 1 for count in sim.stats()["completed_by_key"].values())


def test_compare_runs_one_at_a_time_then_n_at_once(sim: SimServerThread, tmp_path: Path) -> None:
    topics = tmp_path / "topics.txt"
    topics.write_text("tea\ncoffee\ncocoa\n")
    chain = tmp_path / "chain.py"
    chain.write_text(CHAIN)
    out = tmp_path / "cmp"

    proc = chainfleet(
        sim, "exec", "-i", str(topics), "-c", "3", "--compare", "-o", str(out), "-q", "--",
        sys.executable, str(chain), "{input}", cwd=tmp_path,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert "Outputs identical between the two modes: yes" in proc.stdout
    assert "Time saved by running in parallel:" in proc.stdout
    data = json.loads((out / "report.json").read_text())
    assert data["outputs_identical"] is True
    assert data["sequential"]["items"]["succeeded"] == data["parallel"]["items"]["succeeded"] == 3
    assert sim.stats()["ok"] == 2 * 3 * CALLS  # both runs really called


def test_a_second_ctrl_c_ends_the_commands_in_flight(sim: SimServerThread, tmp_path: Path) -> None:
    topics = tmp_path / "topics.txt"
    topics.write_text("a\nb\nc\nd\n")
    chain = tmp_path / "chain.sh"
    chain.write_text('#!/bin/sh\necho $$ > "pid-$1"\nsleep 60\necho done\n')
    chain.chmod(0o755)
    out = tmp_path / "out"
    proc = start(
        sim, "exec", "-i", str(topics), "-c", "2", "-o", str(out), "--", str(chain), "{input}", cwd=tmp_path
    )
    wait_until(lambda: len(list(tmp_path.glob("pid-*"))) >= 2, "the commands did not start", poll=0.05)

    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)  # the first one is taken before the second comes (no assertion on time)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    for pid_file in tmp_path.glob("pid-*"):
        pid = int(pid_file.read_text())
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"command {pid} still runs"
    assert [row["status"] for row in results(out)].count("succeeded") == 0


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
