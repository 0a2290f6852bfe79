"""Issue 22, D1: a run whose calls all finished but whose output phase was killed (kill -9 at
the store's kill points) or whose files were removed since is finished by ``chainfleet resume``
(and ``chainfleet run ... --resume``): the folder is written again from the store, whole, with
no model called; before, resume said "nothing to resume ... left as it was" and left it broken."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import chainfleet

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
SRC = str(Path(chainfleet.__file__).resolve().parents[1])  # this tree's code in the children
ITEMS = 7
PIPELINE = """\
name: t
model: sim
sim: {latency: 0}
input: topic
stages:
  - {name: a, prompt: 'A {{ topic }}'}
  - {name: b, prompt: 'B {{ a }}'}
"""


def chainfleet_cli(*args: str, cwd: Path, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CHAINFLEET_TEST_KILL_AT"}
    env["PYTHONPATH"] = SRC
    if kill_at:
        env["CHAINFLEET_TEST_KILL_AT"] = kill_at
    return subprocess.run(
        [CHAINFLEET, *args, "-q"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(PIPELINE, encoding="utf-8")
    (tmp_path / "t.txt").write_text("".join(f"topic {i}\n" for i in range(ITEMS)), encoding="utf-8")
    return tmp_path


def assert_whole(out: Path) -> None:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == ITEMS and {r["status"] for r in records} == {"succeeded"}
    for name in ("report.html", "timeline.png", "report.md", "report.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["items"]["succeeded"] == ITEMS


RESUMES = {
    "resume": lambda out: ("resume", str(out)),
    "run --resume": lambda out: ("run", "p.yaml", "-i", "t.txt", "--out", str(out), "--resume"),
}


@pytest.mark.parametrize(
    ("kill_at", "how"),
    [("output-started", "resume"), ("output-results", "run --resume"), ("output-html", "resume")],
)
def test_a_run_killed_while_writing_its_output_is_finished_by_resume(
    folder: Path, kill_at: str, how: str
) -> None:
    killed = chainfleet_cli("run", "p.yaml", "-i", "t.txt", "--out", "out", cwd=folder, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (folder / "out" / "report.html").exists()

    done = chainfleet_cli(*RESUMES[how](folder / "out"), cwd=folder)

    assert done.returncode == 0, done.stderr
    assert "its output was not written to its end" in done.stdout and "wrote" in done.stdout
    assert "Traceback" not in done.stderr
    assert_whole(folder / "out")
    again = chainfleet_cli("resume", "out", cwd=folder)
    assert again.returncode == 0 and "nothing to resume" in again.stdout and "left as it was" in again.stdout


def test_removed_or_cut_output_files_are_written_again_by_resume(folder: Path) -> None:
    first = chainfleet_cli("run", "p.yaml", "-i", "t.txt", "--out", "out", cwd=folder)
    assert first.returncode == 0, first.stderr
    out = folder / "out"
    (out / "report.html").unlink()
    (out / "timeline.png").unlink()
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:3]), encoding="utf-8")

    done = chainfleet_cli("resume", "out", cwd=folder)

    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    assert_whole(out)


def test_a_resume_killed_while_rewriting_the_output_is_finished_by_the_next(folder: Path) -> None:
    killed = chainfleet_cli(
        "run", "p.yaml", "-i", "t.txt", "--out", "out", cwd=folder, kill_at="output-results"
    )
    assert killed.returncode == -signal.SIGKILL
    again = chainfleet_cli("resume", "out", cwd=folder, kill_at="output-html")
    assert again.returncode == -signal.SIGKILL

    done = chainfleet_cli("resume", "out", cwd=folder)

    assert done.returncode == 0, done.stderr
    assert_whole(folder / "out")
