"""The benchmarks' peers (issue 23) are optional: without Curator's venv the benchmark says how to
make it and measures chainfleet alone. Nothing here runs a peer (CI has none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_without_curators_venv_the_check_names_the_setup_script(tmp_path: Path) -> None:
    env = {"CHAINFLEET_PEER_VENVS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "peers" / "curator.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"no Curator venv at {tmp_path / 'curator'}: run benchmarks/peers/setup.sh"


def test_without_curators_venv_the_shared_scenario_skips_it_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAINFLEET_PEER_VENVS", str(tmp_path))
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from peers import curator

    measured: list[str] = []

    def go(tool: str, *args: object, **kwargs: object) -> None:
        measured.append(tool)

    result = curator.run_shared(
        go, "http://127.0.0.1:9", chains=10, jobs=2, concurrency=50, key="sim", server={}
    )
    assert result is None
    assert measured == []
    assert "skipped curator: no Curator venv" in capsys.readouterr().out
