"""What the progress display costs a run: calls/s with it on against ``--quiet``.

Runs the demo's three-stage chain on ``sim`` over enough items for ~20,000 calls, at a latency
of 1 ms: every call then sleeps briefly, as a real call waits on the network, and the run is
bound by chainfleet's own CPU, so any display cost shows in full. (The sim counts its text
generation inside its latency; at a latency shorter than that no call ever yields, the display
never draws, and the ratio would be trivially 1: its "display CPU" column then reads 0, so that
cannot pass unnoticed.)

Modes, each measured ``--rounds`` times, interleaved (a different one first each round),
median kept:

- quiet: no display;
- plain: ``Progress("plain")`` to a null stream at its default interval (a line every 5 s), and
  at a line every 0.1 s (a stress: 50 times the default);
- live: ``Progress("live")`` drawing on a null terminal console (rich, forced terminal, 100
  columns) at its default 4 frames a second, and at 20 a second (a stress).

Prints calls/s per mode and the ratio to quiet (target: >= 0.95, i.e. within 5%), and, as a
figure that other load on the machine does not blur, the CPU time the display's own ticks took
(sampling the counters and drawing) as a share of the run's wall time, and per tick.

Run:  python benchmarks/display_overhead.py [--calls 20000] [--concurrency 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from chainfleet import arun
from chainfleet.cli.progress import Progress
from chainfleet.runner.demo import demo_pipeline


class Timed(Progress):
    """A Progress that adds up the CPU time of its ticks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ticks = 0
        self.cpu = 0.0

    def _tick(self) -> None:
        started = time.thread_time()
        super()._tick()
        self.cpu += time.thread_time() - started
        self.ticks += 1


def modes(null: Any) -> dict[str, Callable[[], Timed | None]]:
    def live(rate: float) -> Callable[[], Timed]:
        return lambda: Timed(
            "live",
            console=Console(file=null, force_terminal=True, width=100),
            refresh_per_second=rate,
        )

    return {
        "quiet": lambda: None,
        "plain, every 5 s": lambda: Timed("plain", stream=null),
        "plain, every 0.1 s": lambda: Timed("plain", stream=null, every=0.1),
        "live, 4 frames/s": live(4.0),
        "live, 20 frames/s": live(20.0),
    }


async def one_run(items: list[str], concurrency: int, progress: Timed | None) -> tuple[float, float, float]:
    """Calls per second over the run's wall time (first admission to last result), the
    display's CPU time as a share of that wall time, and its CPU time per tick."""
    try:
        report = await arun(
            demo_pipeline(latency=1e-3, gates=False),
            items,
            concurrency=concurrency,
            on_start=progress.start if progress is not None else None,
        )
    finally:
        if progress is not None:
            await progress.stop()
    assert report.items_succeeded == len(items), report.summary_lines()
    wall = report.wall_seconds
    if progress is None or not progress.ticks:
        return report.calls["total"] / wall, 0.0, 0.0
    return report.calls["total"] / wall, progress.cpu / wall, progress.cpu / progress.ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    items = [f"topic {i}: how things work in place number {i}" for i in range(args.calls // 3)]
    print(
        f"{len(items) * 3:,} calls ({len(items):,} items x 3 stages) at -c {args.concurrency}, "
        f"{args.rounds} rounds; Python {platform.python_version()}, {os.cpu_count()} cores"
    )
    with open(os.devnull, "w", encoding="utf-8") as null:
        chosen = modes(null)
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in chosen}
        asyncio.run(one_run(items[:300], args.concurrency, None))  # warm-up: imports, caches
        names = list(chosen)
        for round_ in range(args.rounds):
            shift = round_ % len(names)  # a different mode goes first each round
            for name in names[shift:] + names[:shift]:
                runs[name].append(asyncio.run(one_run(items, args.concurrency, chosen[name]())))
                print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    quiet = statistics.median(r[0] for r in runs["quiet"])
    print(f"{'mode':<20} {'calls/s':>9} {'ratio':>7} {'display CPU':>12} {'per tick':>9}   runs (calls/s)")
    worst = 1.0
    for name, values in runs.items():
        median = statistics.median(r[0] for r in values)
        ratio = median / quiet
        share = statistics.median(r[1] for r in values)
        per_tick = statistics.median(r[2] for r in values)
        if name != "quiet":
            worst = min(worst, ratio)
        rates = " ".join(f"{r[0]:,.0f}" for r in values)
        print(f"{name:<20} {median:>9,.0f} {ratio:>7.3f} {share:>11.2%} {per_tick * 1000:>7.2f}ms   {rates}")
    verdict = "within 5%" if worst >= 0.95 else "NOT within 5%"
    print(f"worst ratio to quiet: {worst:.3f} ({verdict})")


if __name__ == "__main__":
    main()
