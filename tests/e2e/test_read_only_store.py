"""Issue 22, D10: a valid store on a read-only mount was "not a chainfleet run store (unable to
open database file)" for ``runs`` and ``review --list``. Reading commands read it (SQLite's
read-only mode); a command that must write says the store is read-only, exit 2.

The folder is made read-only for real: as root (whom ``chmod`` does not stop) by a read-only
bind mount in a private mount namespace (``unshare -m``), else by ``chmod``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import chainfleet

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
SRC = str(Path(chainfleet.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": SRC}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ro")
    (folder / "p.yaml").write_text(
        "name: t\nmodel: sim\nsim: {latency: 0}\ninput: topic\n"
        "stages:\n  - {name: a, prompt: 'A {{ topic }}'}\n",
        encoding="utf-8",
    )
    (folder / "t.txt").write_text("x\ny\n", encoding="utf-8")
    done = subprocess.run(
        [CHAINFLEET, "run", "p.yaml", "-i", "t.txt", "--out", "runs/one", "-q"],
        cwd=folder,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return folder / "runs"


def read_only(runs: Path, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run each chainfleet command with ``runs`` read-only; their results."""
    if os.geteuid() == 0:  # root writes through chmod: a read-only bind mount of its own
        if shutil.which("unshare") is None:
            pytest.fail("needs unshare (util-linux) to make a read-only mount as root")
        results = []
        for command in commands:
            script = (
                f"mount --bind {shlex.quote(str(runs))} {shlex.quote(str(runs))} && "
                f"mount -o remount,bind,ro {shlex.quote(str(runs))} && "
                f"exec {shlex.join([CHAINFLEET, *command])}"
            )
            results.append(
                subprocess.run(
                    ["unshare", "-m", "sh", "-c", script],
                    env=ENV,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            )
        return results
    for path in (runs, runs / "one", runs / "one" / "run.db"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        return [
            subprocess.run(
                [CHAINFLEET, *c], env=ENV, capture_output=True, text=True, timeout=120, check=False
            )
            for c in commands
        ]
    finally:
        for path in (runs, runs / "one", runs / "one" / "run.db"):
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_reading_commands_read_a_read_only_store_and_writing_ones_say_why_not(finished: Path) -> None:
    listing, queue, decide = read_only(
        finished,
        ["runs", str(finished)],
        ["review", str(finished / "one"), "--list"],
        ["review", str(finished / "one"), "--approve", "1"],
    )

    for done in (listing, queue, decide):
        assert "not a chainfleet run store" not in done.stderr and "Traceback" not in done.stderr
    assert listing.returncode == 0, listing.stderr
    assert "done" in listing.stdout and "(read-only)" in listing.stdout
    assert queue.returncode == 0, queue.stderr
    assert "nothing waits for review" in queue.stdout
    assert decide.returncode == 2
    assert "read-only" in decide.stderr and "--list and --export only read it" in decide.stderr
    assert (finished / "one" / "run.db").stat().st_size > 0
