"""What the ``chainfleet`` command imports (issue 25): ``--help`` loads no heavy library and a
sim-only run loads no model SDK.

Each test starts the command in a child process, exactly as the console script does, with this
tree's sources first on ``PYTHONPATH``; an ``atexit`` hook in the child writes the names in
``sys.modules`` when it exits. The time these imports take is measured by
``benchmarks/startup.py``, never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

#: libraries that cost tens to hundreds of ms to import and that no help text needs
HEAVY = ["pydantic", "jinja2", "openai", "anthropic", "numpy", "matplotlib", "ray", "pyarrow"]
#: the model SDKs (and their HTTP client) and the optional parts a sim-only run never needs
SDKS = ["openai", "anthropic", "httpx", "httpx2", "ray", "pyarrow"]
#: what timeline.png once cost every run (~1 s of CPU): it is drawn with Pillow now
PLOTTING = ["matplotlib", "numpy"]

LAUNCH = """\
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "chainfleet"
from chainfleet.cli import main
main()
"""


def chainfleet(tmp_path: Path, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``chainfleet *args`` in a child process: its result and the top-level packages it imported."""
    listing = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(SRC), "MODULES_OUT": str(listing)}
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    names = json.loads(listing.read_text(encoding="utf-8"))
    return proc, {name.split(".")[0] for name in names}


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]], ids=["help", "run-help"])
def test_help_imports_no_heavy_library(tmp_path: Path, args: list[str]) -> None:
    proc, imported = chainfleet(tmp_path, *args)

    assert proc.returncode == 0, proc.stderr
    assert "Usage: chainfleet" in proc.stdout
    assert sorted(imported.intersection(HEAVY)) == []


def test_help_still_lists_every_command_with_its_help(tmp_path: Path) -> None:
    proc, _ = chainfleet(tmp_path, "--help")

    lines = proc.stdout.splitlines()
    assert any(line.split()[:1] == ["run"] and "every item of an input file" in line for line in lines)
    for command in ["compare", "demo", "plan", "report", "resume", "review", "runs", "sim-server"]:
        assert any(line.split()[:1] == [command] for line in lines), command


def test_a_sim_only_run_imports_no_model_sdk(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    out = tmp_path / "out"
    proc, imported = chainfleet(
        tmp_path, "run", write_pipeline(), "-i", topics_file(["the sea"]), "-o", out, "-q"
    )

    assert proc.returncode == 0, proc.stderr
    assert (out / "results.jsonl").exists()
    assert (out / "timeline.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(imported.intersection(SDKS)) == []


def test_a_sim_only_run_draws_its_timeline_without_matplotlib(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    out = tmp_path / "out"
    proc, imported = chainfleet(
        tmp_path, "run", write_pipeline(), "-i", topics_file(["the sea"]), "-o", out, "-q"
    )

    assert proc.returncode == 0, proc.stderr
    assert (out / "timeline.png").read_bytes().startswith(b"\x89PNG")
    assert 'src="data:image/png;base64,' in (out / "report.html").read_text(encoding="utf-8")
    assert sorted(imported.intersection(PLOTTING)) == []


def test_python_dash_m_chainfleet_is_the_same_command_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chainfleet", "--help"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "sim-server" in proc.stdout and "resume" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "chainfleet", "run", "nope.yaml", "-i", "x.txt"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "nope.yaml" in bad.stderr
