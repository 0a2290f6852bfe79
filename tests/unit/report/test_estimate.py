"""The "one at a time" estimate from recorded calls alone: without queueing it is the plain sum,
also when latencies vary widely (a cloud API's); tool steps are summed and do not count as in
flight. (Against a sim-server that queues: tests/e2e/test_estimate.py.)"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from chainfleet.report.estimate import estimate_sequential
from chainfleet.store.runstore import CallRow


def closed_loop_calls(chains: int, calls_each: int, latency: Callable[[int], float]) -> list[CallRow]:
    """What a client with ``chains`` in flight records on a server that never queues: each chain
    makes its calls back to back, each taking ``latency(chain)`` (no shared server time)."""
    rows = []
    for chain in range(chains):
        t = chain * 1e-4
        for n in range(calls_each):
            took = latency(chain)
            rows.append(CallRow(chain * calls_each + n, str(chain), "a", 1, t, t, t + took, "ok"))
            t += took
    return sorted(rows, key=lambda r: r.started)


def test_latencies_that_vary_but_do_not_queue_keep_the_plain_sum() -> None:
    rng = random.Random(7)
    rows = closed_loop_calls(32, 40, lambda chain: rng.lognormvariate(0, 0.6))  # a cloud API's spread
    estimate = estimate_sequential(rows)
    assert estimate.method == "sum"
    assert estimate.seconds == pytest.approx(sum(r.ended - r.started for r in rows))
    assert estimate.peak_in_flight == 32


def test_tool_steps_are_summed_and_do_not_count_as_in_flight() -> None:
    rows = closed_loop_calls(4, 10, lambda chain: 0.5)
    tools = [
        CallRow(r.index, r.item_id, "fetch", 1, r.started, r.started, r.started + 0.1, "ok") for r in rows
    ]
    estimate = estimate_sequential(
        sorted(rows + tools, key=lambda r: r.started), servers={"a": "sim", "fetch": None}
    )
    assert estimate.method == "sum"
    assert estimate.seconds == pytest.approx(40 * 0.5 + 40 * 0.1)
