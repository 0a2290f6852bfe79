"""A run whose process was killed shows as such: `runs` and `report` say "interrupted
(resumable)" with the counts from its store, and the resume command, not "running"."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from waiting import wait_until

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
PIPELINE = """\
name: slow
input: topic
sim: {latency: 0.2}
stages:
  - name: research
    prompt: "Research {{ topic }}."
  - name: write
    prompt: "Write on {{ topic }} from {{ research }}."
"""


def _done_items(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return int(con.execute("SELECT COUNT(*) FROM items WHERE status = 'succeeded'").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_killed_run_is_listed_and_reported_as_interrupted_resumable(tmp_path: Path) -> None:
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    topics = tmp_path / "topics.txt"
    topics.write_text("".join(f"topic {i}\n" for i in range(40)), encoding="utf-8")
    out = tmp_path / "runs" / "one"
    proc = subprocess.Popen(
        [CHAINFLEET, "run", str(pipeline), "-i", str(topics), "-c", "2", "--out", str(out), "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _done_items(out / "run.db") >= 3, "the run did not get that far", poll=0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    listed = subprocess.run([CHAINFLEET, "runs", str(tmp_path / "runs")], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    row = [line for line in listed.stdout.splitlines() if str(out) in line]
    assert len(row) == 1, listed.stdout
    assert "interrupted (resumable)" in row[0]
    assert " running " not in row[0]

    reported = subprocess.run([CHAINFLEET, "report", str(out)], capture_output=True, text=True)
    assert reported.returncode == 0, reported.stderr
    assert f"interrupted (resumable): its process ended mid-run; chainfleet resume {out}" in reported.stdout
    done = _done_items(out / "run.db")
    assert f"{done}/40 items succeeded" in reported.stdout.splitlines()[0]
    never = [line for line in reported.stdout.splitlines() if "never admitted" in line]
    assert len(never) == 1, reported.stdout
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 40  # every item of the input, the never-admitted ones as skipped
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert skipped and all("killed before admitting it" in r["error"]["message"] for r in skipped)
    assert never[0].startswith(f"{len(skipped):,} items were never admitted")
    assert "stopped early: the run was killed mid-run (resumable)" in reported.stdout
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [s["status"] for s in report["sessions"]] == ["killed-unknown"]
    assert report["items"]["skipped"] == len(skipped) and report["items"]["total"] == 40

    resumed = subprocess.run(
        [CHAINFLEET, "resume", str(out), "-q"], capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    after = subprocess.run([CHAINFLEET, "runs", str(tmp_path / "runs")], capture_output=True, text=True)
    assert "interrupted (resumable)" not in after.stdout.splitlines()[-1]
    final = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["status"] for r in final] == ["succeeded"] * 40
