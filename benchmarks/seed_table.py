"""Reproduce the classic lesson's throughput table, measured, against the ideal; and runner overhead.

Part 1, the table: 10, 50 and 100 pieces; sequential and 5, 10, 25 chains in flight; a chain is
3 calls of 10 s. The latency is scaled down (10 s -> 20 ms a call) so the whole table runs in
about 15 s, and every figure is scaled back up for printing. The ideal for N pieces at
concurrency C is ceil(N / C) x chain time: with the chain time fixed, C chains finish together
and the next C start. (The lesson's own table has slips: it gives 90 s for 10 pieces at 5 in
flight, where the ideal is 2 waves x 30 s = 60 s.) Target: every cell within 5% of ideal.

Part 2, overhead: 30,000 calls on ``sim`` with zero latency at concurrency 1,000 (10,000 chains of
3 calls), through chainfleet's runner against a bare ``asyncio.gather`` + ``Semaphore`` loop over
the same sim calls with the same prompts. Printed as calls per second and their ratio.

Run:  python benchmarks/seed_table.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import sys
import time

from chainfleet import Pipeline, arun
from chainfleet.pipeline import SimSettings
from chainfleet.providers.base import CompletionRequest
from chainfleet.providers.sim import SimProvider, sim_text

SCALE = 500.0  # 20 ms measured = 10 s in the lesson
CALL = 10.0 / SCALE
LESSON = {  # the lesson's table, in seconds, for comparison only
    (10, 1): 300,
    (50, 1): 1500,
    (100, 1): 3000,
    (10, 5): 90,
    (50, 5): 330,
    (100, 5): 630,
    (10, 10): 60,
    (50, 10): 180,
    (100, 10): 330,
    (10, 25): 30,
    (50, 25): 90,
    (100, 25): 150,
}


def pipeline(latency: float) -> Pipeline:
    return Pipeline.from_dict(
        {
            "name": "seed",
            "sim": {"latency": latency},
            "input": "topic",
            "stages": [
                {
                    "name": "research",
                    "prompt": "Research {{ topic }}: key facts.",
                    "max_tokens": 300,
                },
                {
                    "name": "write",
                    "prompt": "Write an article on {{ topic }} from:\n{{ research }}",
                },
                {"name": "edit", "prompt": "Edit this draft:\n{{ write }}"},
            ],
        }
    )


def topics(n: int) -> list[str]:
    return [f"topic number {i}" for i in range(1, n + 1)]


async def bare_chains(data: list[str], concurrency: int, latency: float) -> tuple[float, list[str]]:
    """The lesson's pattern: asyncio.gather over every chain, an asyncio.Semaphore as the cap,
    the same sim calls with the same prompts. Returns (seconds, final outputs)."""
    sim = SimProvider(SimSettings(latency=latency))
    sem = asyncio.Semaphore(concurrency)

    async def chain(topic: str) -> str:
        async with sem:
            r = await sim.complete(
                CompletionRequest(model="sim", prompt=f"Research {topic}: key facts.", max_tokens=300)
            )
            w = await sim.complete(
                CompletionRequest(model="sim", prompt=f"Write an article on {topic} from:\n{r.text}")
            )
            e = await sim.complete(CompletionRequest(model="sim", prompt=f"Edit this draft:\n{w.text}"))
            return e.text

    started = time.perf_counter()
    outs = await asyncio.gather(*(chain(t) for t in data))
    return time.perf_counter() - started, list(outs)


async def table(pieces_list: list[int], levels: list[int]) -> list[float]:
    pipe = pipeline(CALL)
    chain = 3 * CALL
    ratios = []
    print(
        f"{'pieces':>6} {'mode':>14} {'chainfleet':>10} {'bare loop':>10} {'ideal':>7} "
        f"{'ratio':>6} {'bare ratio':>10} {'lesson':>7}"
    )
    for pieces in pieces_list:
        for c in levels:
            report = await arun(pipe, topics(pieces), concurrency=c)
            assert report.items_succeeded == pieces, report.summary_lines()
            bare, _ = await bare_chains(topics(pieces), c, CALL)
            ideal = math.ceil(pieces / c) * chain
            ratio = report.wall_seconds / ideal
            ratios.append(ratio)
            mode = "sequential" if c == 1 else f"{c} concurrent"
            lesson = LESSON.get((pieces, c))
            slip = "" if lesson is None or abs(lesson - ideal * SCALE) < 1e-6 else " *"
            print(
                f"{pieces:>6} {mode:>14} {report.wall_seconds * SCALE:>9.1f}s {bare * SCALE:>9.1f}s "
                f"{ideal * SCALE:>6.0f}s {ratio:>6.3f} {bare / ideal:>10.3f} "
                f"{lesson if lesson is not None else '-':>6}s{slip}"
            )
    return ratios


async def overhead(items: int, concurrency: int) -> tuple[float, float, float]:
    pipe = pipeline(0.0)
    data = topics(items)
    calls = items * 3

    sim_text.cache_clear()  # neither side may reuse the other's simulated texts
    started = time.perf_counter()
    report = await arun(pipe, data, concurrency=concurrency, check_input=False)
    ours = time.perf_counter() - started
    assert report.calls["total"] == calls and report.items_succeeded == items

    sim_text.cache_clear()
    bare, outs = await bare_chains(data, concurrency, 0.0)
    assert len(outs) == items
    # same prompts, same sim: the final outputs must match chainfleet's
    assert report.outputs()[str(items)] == outs[-1]
    return calls / ours, calls / bare, calls / report.wall_seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, Python {sys.version.split()[0]}, {platform.processor() or ''}")
    print(f"table: 3 calls a chain, 10 s a call scaled to {CALL * 1000:.0f} ms; ideal = ceil(N/C) x 30 s")
    pieces = [10, 50] if args.quick else [10, 50, 100]
    ratios = asyncio.run(table(pieces, [1, 5, 10, 25]))
    worst = max(ratios)
    print(f"worst ratio to ideal: {worst:.3f} ({'within' if worst <= 1.05 else 'OUTSIDE'} 5%)")
    print("* the lesson's figure differs from the ideal")
    items, conc = (2000, 200) if args.quick else (10_000, 1000)
    ours, bare, run_phase = asyncio.run(overhead(items, conc))
    print(
        f"overhead: {items * 3:,} zero-latency sim calls at concurrency {conc}: chainfleet "
        f"{ours:,.0f} calls/s end to end, bare gather+Semaphore {bare:,.0f} calls/s, "
        f"ratio {ours / bare:.2f}"
    )
    print(
        f"  chainfleet's run phase alone (first admission to last result, before quality scoring "
        f"and the report): {run_phase:,.0f} calls/s, ratio {run_phase / bare:.2f}"
    )


if __name__ == "__main__":
    main()
