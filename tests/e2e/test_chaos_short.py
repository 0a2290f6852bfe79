"""The short chaos check (``benchmarks/chaos.py --phases``, a handful of its kills): kill -9 at
named moments (store creation, the output phase, batch polling, a reviewer's decision), go on as
a user would, and the folder is whole: results.jsonl with every record, report.html,
timeline.png, report.md and report.json with the right totals. Deterministic: the kill points,
not random sleeps."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

import chainfleet

SRC = str(Path(chainfleet.__file__).resolve().parents[1])
CHAOS = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos.py"


def load_chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos", CHAOS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chaos = load_chaos()


@pytest.mark.parametrize(
    "phase",
    [
        "store creation",
        "output phase, after results.jsonl",
        "output phase, before report.html",
        "batch, polling",
        "review, deciding",
    ],
)
def test_a_kill_at_each_phase_resumes_to_a_whole_folder(
    tmp_path: Path, phase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", SRC)  # the children run this tree's code
    problems, codes = chaos.phase_trial(tmp_path, phase, items=5)

    assert -9 in codes, f"the kill point of {phase!r} was never reached: {codes}"
    assert codes[-1] == 0, codes
    assert problems == []
    assert "CHAINFLEET_TEST_KILL_AT" not in os.environ
