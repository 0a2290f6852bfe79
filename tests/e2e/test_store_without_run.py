"""Issue 22, D2: a process killed between making run.db and recording its run (kill -9 at the
``store-created`` kill point) left a store that ``runs`` did not list at all. It lists it as
stopped before its first call, with the command that starts it; that command works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import chainfleet

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
SRC = str(Path(chainfleet.__file__).resolve().parents[1])


def chainfleet_cli(*args: str, cwd: Path, kill_at: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "CHAINFLEET_TEST_KILL_AT": kill_at}
    return subprocess.run(
        [CHAINFLEET, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_runs_lists_a_store_with_no_run_and_the_command_that_starts_it(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: t\nmodel: sim\nsim: {latency: 0}\ninput: topic\n"
        "stages:\n  - {name: a, prompt: 'A {{ topic }}'}\n",
        encoding="utf-8",
    )
    (tmp_path / "t.txt").write_text("x\ny\n", encoding="utf-8")
    killed = chainfleet_cli(
        "run", "p.yaml", "-i", "t.txt", "-o", "runs/a", "-q", cwd=tmp_path, kill_at="store-created"
    )
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "runs" / "a" / "run.db").is_file()

    listed = chainfleet_cli("runs", "runs", cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    assert "no runs under" not in listed.stdout
    assert "runs/a/: no run: stopped before its first call (nothing was paid)" in listed.stdout
    assert "chainfleet run PIPELINE -i INPUT -o runs/a --resume" in listed.stdout
    started = chainfleet_cli("run", "p.yaml", "-i", "t.txt", "-o", "runs/a", "--resume", "-q", cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    assert json.loads((tmp_path / "runs" / "a" / "report.json").read_text())["items"]["succeeded"] == 2
