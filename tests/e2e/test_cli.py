"""The installed ``chainfleet`` console script in a child process: its help lists the commands,
and its exit codes are those the in-process tests expect."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import POISONED, read_results

# -- items that fail -------------------------------------------------------------------------------


# -- the installed console script ----------------------------------------------------------------

SCRIPT = Path(sys.executable).parent / "chainfleet"

needs_script = pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed")


@needs_script
def test_console_script_help_lists_the_commands() -> None:
    proc = subprocess.run([SCRIPT, "--help"], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, proc.stderr
    assert "run " in proc.stdout and "demo " in proc.stdout


@needs_script
def test_console_script_run_exit_codes(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    pipeline = write_pipeline(sim={"fail_on": ["poison"]})
    out = tmp_path / "out"
    args = [SCRIPT, "run", pipeline, "-i", topics_file(POISONED), "-o", out, "-q", "--max-attempts", "1"]

    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)

    assert proc.returncode == 1, proc.stderr
    assert "4/5 items succeeded" in proc.stdout
    assert len(read_results(out)) == 5

    bad = subprocess.run(
        [SCRIPT, "run", tmp_path / "nope.yaml", "-i", topics_file(), "-o", tmp_path / "o2"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1
    assert "nope.yaml" in bad.stderr
