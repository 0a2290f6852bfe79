"""A server with N slots and first-come-first-served waiting, and a client of closed-loop chains,
simulated on virtual time: the call rows a run against it records, and what the same items take
one at a time (what a measured -c 1 run gives). For the "one at a time" estimate's tests."""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chainfleet.store.runstore import CallRow

#: a call's service time from the random source and its stage number
Service = Callable[[random.Random, int], float]


@dataclass
class QueueRun:
    """What one simulated run recorded: its call rows (by start) and its wall time."""

    rows: list[CallRow] = field(default_factory=list)
    wall: float = 0.0


def queue_run(
    items: int,
    calls_each: int,
    concurrency: int,
    slots: int,
    service: Service,
    *,
    gap: float = 0.0,
    seed: int = 0,
    tokens: int = 10,
) -> QueueRun:
    """``items`` chains of ``calls_each`` calls, ``concurrency`` chains in flight, each call sent
    ``gap`` seconds after the chain's previous one ended, against ``slots`` slots."""
    rng = random.Random(seed)
    events: list[tuple[float, int, str, tuple[int, int, float, float]]] = []
    order = 0

    def push(at: float, kind: str, call: tuple[int, int, float, float]) -> None:
        nonlocal order
        heapq.heappush(events, (at, order, kind, call))
        order += 1

    free, waiting, run = slots, deque[tuple[int, int, float, float]](), QueueRun()
    admitted = 0
    for chain in range(min(concurrency, items)):
        push(chain * 1e-4, "send", (admitted, 0, 0.0, 0.0))
        admitted += 1
    while events:
        now, _, kind, (item, n, sent, took) = heapq.heappop(events)
        if kind == "send":
            call = (item, n, now, service(rng, n))
            if free > 0:
                free -= 1
                push(now + call[3], "done", call)
            else:
                waiting.append(call)
            continue
        run.rows.append(
            CallRow(
                item, str(item), f"s{n}", 1, sent, sent, now, "ok", input_tokens=tokens, output_tokens=tokens
            )
        )
        run.wall = max(run.wall, now)
        if waiting:
            following = waiting.popleft()
            push(now + following[3], "done", following)
        else:
            free += 1
        if n + 1 < calls_each:
            push(now + gap, "send", (item, n + 1, 0.0, 0.0))
        elif admitted < items:
            push(now + gap, "send", (admitted, 0, 0.0, 0.0))
            admitted += 1
    run.rows.sort(key=lambda row: row.started)
    return run
