"""A stage's numbers in report.json are the same whether its percentiles come from a sorted
list (below ``NUMPY_FROM`` calls: a short run need not import numpy, issue 25) or numpy."""

from __future__ import annotations

import random
from array import array

import pytest

from chainfleet.report import build
from chainfleet.store.stats import StageStats


@pytest.mark.parametrize("count", [1, 2, 7, 100, 1001])
def test_the_numbers_do_not_depend_on_how_they_were_taken(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(count)
    seconds = array("d", (rng.expovariate(2) for _ in range(count)))
    stage = StageStats(calls=count, failed=count // 3, seconds=seconds)

    plain = build._stage_numbers(stage)
    monkeypatch.setattr(build, "NUMPY_FROM", 0)
    with_numpy = build._stage_numbers(stage)

    assert plain == with_numpy
    assert plain["calls"] == count and plain["failed"] == count // 3
    assert plain["max_seconds"] == round(max(stage.seconds), 4)


def test_a_stage_without_calls_reports_zeros() -> None:
    assert build._stage_numbers(StageStats()) == {
        "calls": 0,
        "failed": 0,
        "p50_seconds": 0.0,
        "p95_seconds": 0.0,
        "max_seconds": 0.0,
    }
