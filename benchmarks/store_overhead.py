"""What the durable run store costs: 30,000 zero-latency sim calls with the store on disk
(WAL, every stage result committed before it counts as done, every attempt recorded) against
the same run on an in-memory SQLite store (nothing durable: as close to "no store" as the runner
gets, since results.jsonl is read back from the store).

Run:  python benchmarks/store_overhead.py [--items 10000] [--concurrency 1000]
Target (issue 6): the durable store costs under 25% of calls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

from chainfleet import Pipeline
from chainfleet.inputs import items_from
from chainfleet.runner.core import Runner
from chainfleet.store.runstore import RunStore


def pipeline() -> Pipeline:
    return Pipeline.from_dict(
        {
            "sim": {"latency": 0},
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}: key facts.", "max_tokens": 300},
                {"name": "write", "prompt": "Write an article on {{ topic }} from:\n{{ research }}"},
                {"name": "edit", "prompt": "Edit this draft:\n{{ write }}"},
            ],
        }
    )


async def one(store: RunStore, items: int, concurrency: int) -> tuple[float, float]:
    runner = Runner(pipeline(), concurrency=concurrency, store=store)
    source = items_from([f"topic number {i}" for i in range(items)], input_field="topic")
    started = time.perf_counter()
    report = await runner.run(source)
    total = time.perf_counter() - started
    assert report.items_succeeded == items
    return report.calls["total"] / report.wall_seconds, report.calls["total"] / total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=1000)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, Python {sys.version.split()[0]}")
    print(f"{args.items * 3:,} zero-latency sim calls at concurrency {args.concurrency}")
    with tempfile.TemporaryDirectory() as folder:
        memory = asyncio.run(one(RunStore.open(":memory:"), args.items, args.concurrency))
        durable = asyncio.run(one(RunStore.open(Path(folder) / "run.db"), args.items, args.concurrency))
    print(f"{'store':<34} {'run phase':>12} {'with report':>12}")
    print(f"{'in memory (nothing durable)':<34} {memory[0]:>10,.0f}/s {memory[1]:>10,.0f}/s")
    print(f"{'on disk, committed per result':<34} {durable[0]:>10,.0f}/s {durable[1]:>10,.0f}/s")
    cost = 1 - durable[0] / memory[0]
    print(f"the durable store costs {cost:.1%} of calls/s in the run phase (target: under 25%)")


if __name__ == "__main__":
    main()
