"""``-c auto`` against a server that queues, on the virtual clock: the latency gradient keeps the
calls in flight near the server's slots instead of climbing to the cap.

The server is the sim server's own :class:`SlotQueue` (8 slots, the rest wait in line), its
service time on the same virtual clock, and the controller the runner's AdaptiveConcurrency.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chainfleet.clock import VirtualClock
from chainfleet.limits.adaptive import AdaptiveConcurrency
from chainfleet.limits.control import QueueEstimate
from chainfleet.sim.queue import SlotQueue

SLOTS, SERVICE = 8, 0.5


def on_clock(clock: VirtualClock, make: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        return await clock.run(make())

    return asyncio.run(main())


async def queueing_run(
    clock: VirtualClock, adaptive: AdaptiveConcurrency, *, calls: int, refuse_above: int | None = None
) -> tuple[list[float], list[float], int]:
    """``calls`` calls through ``adaptive`` against a server of SLOTS slots (and, with
    ``refuse_above``, a 503 above that many in flight). Returns (latencies, end times, 503s)."""
    server = SlotQueue(SLOTS, clock=clock.now)
    latencies: list[float] = []
    ends: list[float] = []
    refused = 0
    at_server = 0
    left = calls

    async def worker() -> None:
        nonlocal left, refused, at_server
        while left > 0:
            left -= 1
            await adaptive.acquire()
            try:
                while True:
                    started = clock.now()
                    if refuse_above is not None and at_server >= refuse_above:
                        refused += 1
                        await adaptive.observe(ok=False, overloaded=True, latency=None)
                        await clock.sleep(0.05)
                        continue
                    at_server += 1
                    try:
                        async with server.slot():
                            await clock.sleep(SERVICE)
                    finally:
                        at_server -= 1
                    latency = clock.now() - started
                    latencies.append(latency)
                    ends.append(clock.now())
                    await adaptive.observe(ok=True, overloaded=False, latency=latency)
                    break
            finally:
                await adaptive.release()

    await asyncio.gather(*(worker() for _ in range(adaptive.cap)))
    return latencies, ends, refused


def steady(ends: list[float]) -> float:
    """Calls per second over the middle 80% of the run."""
    end = max(ends)
    return sum(1 for t in ends if 0.1 * end <= t < 0.9 * end) / (0.8 * end)


def test_auto_keeps_a_queueing_server_busy_without_queueing_much() -> None:
    clock = VirtualClock()
    adaptive = AdaptiveConcurrency(cap=64)
    latencies, ends, _ = on_clock(clock, lambda: queueing_run(clock, adaptive, calls=1800))
    capacity = SLOTS / SERVICE
    assert steady(ends) >= 0.9 * capacity  # at least 90% of what the 8 slots can serve
    assert statistics.median(latencies) <= 1.3 * SERVICE  # p50 at most 1.3x unloaded
    assert adaptive.max_seen < 3 * SLOTS  # refusal-only AIMD climbed to 3x the slots


def test_the_queue_estimate_reads_waiting_calls_from_latency() -> None:
    estimate = QueueEstimate()
    for _ in range(8):  # 8 in flight, unloaded: 0.5 s each
        estimate.sample(0.5, in_flight=8)
    assert estimate.verdict == "grow" and estimate.queue == pytest.approx(0.0)
    for _ in range(12):  # 12 in flight on 8 slots: 0.75 s each, 4 waiting
        estimate.sample(0.75, in_flight=12)
    assert estimate.queue == pytest.approx(4.0)
    assert estimate.verdict == "shrink"


def test_jitter_alone_is_not_read_as_a_queue() -> None:
    estimate = QueueEstimate()
    for round_ in range(20):
        for i in range(16):  # 0.3-0.5 s a call, every round alike: no queue
            estimate.sample(0.3 + 0.2 * ((i * 7 + round_) % 16) / 15, in_flight=16)
    assert estimate.verdict in ("grow", "hold")


def test_auto_still_backs_off_a_server_that_refuses() -> None:
    clock = VirtualClock()
    adaptive = AdaptiveConcurrency(cap=64)
    _, ends, refused = on_clock(clock, lambda: queueing_run(clock, adaptive, calls=1200, refuse_above=SLOTS))
    assert refused <= 0.05 * 1200  # few 503s
    assert steady(ends) >= 0.85 * SLOTS / SERVICE
