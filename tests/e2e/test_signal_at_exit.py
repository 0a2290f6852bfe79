"""Issue 22, D5: a stop signal as a finished run's process exits printed "Exception ignored in
... chainfleet.signals.Interrupted: SIGTERM" and exited 0. It is a stop like any other: one line
naming the signal, exit 130, and the output folder whole. ``CHAINFLEET_TEST_SIGNAL_AT`` sends
the signal at a named point (after the summary; in the interpreter's exit), so no test races."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import chainfleet

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
SRC = str(Path(chainfleet.__file__).resolve().parents[1])


@pytest.mark.parametrize("point", ["summary", "exit"])
def test_a_signal_as_the_run_exits_is_a_clean_stop(tmp_path: Path, point: str) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: t\nmodel: sim\nsim: {latency: 0}\ninput: topic\n"
        "stages:\n  - {name: a, prompt: 'A {{ topic }}'}\n",
        encoding="utf-8",
    )
    (tmp_path / "t.txt").write_text("x\ny\nz\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": SRC, "CHAINFLEET_TEST_SIGNAL_AT": point}

    done = subprocess.run(
        [CHAINFLEET, "run", "p.yaml", "-i", "t.txt", "--out", "out", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 130, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr
    assert "SIGTERM received as" in done.stderr and "stopped" in done.stderr
    assert len((tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 3
    assert (tmp_path / "out" / "report.html").is_file()
    assert (
        json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["items"]["succeeded"] == 3
    )


def test_a_signal_as_any_command_exits_is_a_clean_stop(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "CHAINFLEET_TEST_SIGNAL_AT": "exit"}
    done = subprocess.run(
        [CHAINFLEET, "runs", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 130 and "Exception ignored" not in done.stderr
    assert "SIGTERM received as chainfleet ended" in done.stderr
