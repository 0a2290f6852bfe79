"""Pipes through a real shell: ``cat topics | chainfleet run p.yaml -i - --results - | head -3``.

Stdin is read as it arrives (text lines, or JSONL with ``--input-format jsonl``, each line
checked with a file's messages); each finished item's record goes to stdout as a JSON line with
its ``index``; stdout carries nothing else (progress and summary are on stderr); the output
folder is still written; a reader that goes away stops admission and the run exits 0."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
SRC = str(Path(__file__).resolve().parents[2] / "src")

PIPELINE = """\
name: piped
model: sim
sim: {latency: 0.01}
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}."
    max_tokens: 60
  - name: write
    prompt: "Write an article on {{ topic }} from:\\n{{ research }}"
    max_tokens: 60
"""


def shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``script`` in bash, with this worktree's chainfleet; it prints chainfleet's exit code
    last on stderr (``rc=N``), whatever the pipeline's other commands do."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": SRC}
    return subprocess.run(
        ["bash", "-c", script + '; echo "rc=${PIPESTATUS[1]}" >&2'],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def exit_code(done: subprocess.CompletedProcess[str]) -> int:
    return int(done.stderr.strip().splitlines()[-1].removeprefix("rc="))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "p.yaml").write_text(PIPELINE, encoding="utf-8")
    (tmp_path / "topics.txt").write_text("".join(f"topic {i}\n" for i in range(40)), encoding="utf-8")
    return tmp_path


def test_head_takes_three_records_and_the_run_stops_cleanly(folder: Path) -> None:
    cf = shlex.quote(CHAINFLEET)
    done = shell(f"cat topics.txt | {cf} run p.yaml -i - --results - -c 2 --out out | head -3", folder)

    assert exit_code(done) == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]  # stdout holds the records alone
    assert all(r["status"] == "succeeded" and r["outputs"]["write"] for r in records)
    assert all(records[i]["input"]["topic"] == f"topic {records[i]['index']}" for i in range(3))
    assert "stopped: the reader of --results - closed it" in done.stderr
    assert "Traceback" not in done.stderr
    kept = [json.loads(line) for line in (folder / "out" / "results.jsonl").read_text().splitlines()]
    assert 3 <= len(kept) < 40  # admission stopped; what finished is in the folder
    assert {r["status"] for r in kept} == {"succeeded"}

    resumed = shell(f"cat topics.txt | {cf} resume out -q", folder)  # the same input, piped again

    assert exit_code(resumed) == 0, resumed.stderr
    assert f"reused {2 * len(kept)} finished stage results" in resumed.stderr
    assert len(resumed.stdout.splitlines()) == 40  # --results - is kept with the run
    final = [json.loads(line) for line in (folder / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in final] == ["succeeded"] * 40


def test_every_record_in_input_order_with_ordered(folder: Path) -> None:
    cf = shlex.quote(CHAINFLEET)
    done = shell(f"cat topics.txt | {cf} run p.yaml -i - --results - --ordered -c 8 --out out", folder)

    assert exit_code(done) == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["index"] for r in records] == list(range(40))
    assert [r["id"] for r in records] == [str(i + 1) for i in range(40)]  # a text line's number
    assert "40/40 items succeeded" in done.stderr  # the summary, on stderr
    assert (folder / "out" / "report.json").is_file()


def test_jsonl_lines_are_checked_as_they_arrive_with_a_files_messages(folder: Path) -> None:
    (folder / "items.jsonl").write_text(
        '{"topic": "bees"}\n{"topic": "ants"}\n[1, 2]\n{"topic": "moths"}\n', encoding="utf-8"
    )
    cf = shlex.quote(CHAINFLEET)
    done = shell(
        f"cat items.jsonl | {cf} run p.yaml -i - --input-format jsonl --results - --ordered -c 1 --out out",
        folder,
    )

    assert exit_code(done) == 2, done.stderr
    assert "error: <stdin>:3: expected a JSON object, got an array" in done.stderr
    assert [json.loads(line)["input"]["topic"] for line in done.stdout.splitlines()] == ["bees", "ants"]
