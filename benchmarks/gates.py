"""Contracts and gates at scale: the same outcomes one at a time and 25 in flight, near the ideal.

300 items through research -> write -> edit on ``sim``: research answers a JSON contract (10%
of its replies broken on purpose, so some are repaired), write's draft passes a rules gate (a
word count, no placeholder text) and a judge or is revised with the judge's feedback (twice at
most, then accepted and flagged). The latency is scaled down (a call of 2.5 s is 50 ms here,
no jitter) so both runs fit in about two minutes; the table scales nothing back.

Run once at concurrency 1 (the baseline, in the same process) and once at 25, then:

- per-item outcomes: every item's final outputs, its gate outcome, the pass or fail of each try,
  its revisions and its repairs must be identical between the two runs;
- time against the ideal that counts every extra call: an item's chain is its own number of
  calls (research, its repairs, each draft and each judge verdict, edit) x the latency. One at
  a time the ideal is the sum of the chains; 25 in flight it is the makespan of admitting the
  items in input order into 25 slots, each taking the next item as one frees (what chainfleet's
  admission does), computed from the run's own per-item call counts. Target: within 5%.

Run:  python benchmarks/gates.py [--items 300] [--concurrency 25] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chainfleet import Pipeline, arun
from chainfleet.report.gates import gate_outcomes
from chainfleet.report.model import RunReport

SCHEMA = {
    "type": "object",
    "properties": {
        "facts": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 5},
        "sources": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "url": {"type": "string"}},
                "required": ["title", "url"],
            },
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["facts", "sources"],
}


def pipeline(latency: float) -> Pipeline:
    return Pipeline.from_dict(
        {
            "name": "gated",
            "model": "sim",
            "sim": {"latency": latency, "seed": 0, "invalid_output_rate": 0.1},
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}: facts and sources.", "output": SCHEMA},
                {
                    "name": "write",
                    "prompt": "Write on {{ topic }} from:\n{{ research.facts | join('\\n') }}\n"
                    "Cite {{ research.sources[0].url }}",
                    "gate": [
                        {"min_words": 100},
                        {"must_not_include": ["TODO", "lorem ipsum"]},
                        {"name": "editor", "judge": {"rubric": "clear and accurate", "threshold": 7}},
                    ],
                    "on_fail": "revise",
                    "max_revisions": 2,
                    "then": "accept",
                },
                {"name": "edit", "prompt": "Edit this draft:\n{{ write }}"},
            ],
        }
    )


def topics(n: int) -> list[str]:
    return [f"topic {i}: how the {i}th city of the atlas grew its harbour" for i in range(n)]


def per_item(report: RunReport) -> dict[int, Any]:
    """Everything an item's outcome is: outputs, status, each gate's decision, repairs."""
    assert report.store is not None
    gates = gate_outcomes(report.store, report.run_id)
    found: dict[int, Any] = {}
    for record in report.results():
        outcome = {stage: gates.get((record.id, stage)) for stage in ("research", "write")}
        found[record.index] = (record.status, record.outputs, outcome)
    repairs: Counter[int] = Counter()
    for row in report.store.revisions(report.run_id):
        repairs[row.index] += row.repairs
    return {index: (*value, repairs[index]) for index, value in found.items()}


def calls_per_item(report: RunReport) -> list[int]:
    """Each item's calls, in input order (attempts that succeeded: no call failed here)."""
    assert report.store is not None
    counts: Counter[int] = Counter(row.index for row in report.store.calls(report.run_id))
    return [counts[index] for index in sorted(counts)]


def ideal_wall(chains: list[float], slots: int) -> float:
    """The makespan of admitting ``chains`` in order into ``slots`` (each takes the next as it
    frees): what a scheduler with no overhead would take."""
    free = [0.0] * min(slots, len(chains))
    heapq.heapify(free)
    end = 0.0
    for seconds in chains:
        start = heapq.heappop(free)
        end = max(end, start + seconds)
        heapq.heappush(free, start + seconds)
    return end


async def one(items: int, concurrency: int, latency: float, out: Path) -> tuple[RunReport, float]:
    started = time.perf_counter()
    report = await arun(pipeline(latency), topics(items), concurrency=concurrency, out=out)
    return report, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=25)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds a call (default 0.05)")
    args = parser.parse_args()
    print(f"{platform.python_implementation()} {platform.python_version()}, {sys.platform}")
    print(
        f"{args.items} items: research (JSON contract, 10% of replies broken) -> write (rules gate + "
        f"judge, revise x2) -> edit; sim at {args.latency * 1000:g} ms a call\n"
    )
    rows, outcomes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for c in (1, args.concurrency):
            report, _ = asyncio.run(one(args.items, c, args.latency, Path(tmp) / f"c{c}"))
            chains = [n * args.latency for n in calls_per_item(report)]
            ideal = ideal_wall(chains, c)
            gates = report.gates or {}
            assert report.store is not None
            revisions = sum(o[1] for o in gate_outcomes(report.store, report.run_id).values())
            repairs = sum(gates.get("repairs", {}).values())
            rows.append((c, report, ideal, revisions, repairs, gates.get("judge_calls", 0)))
            outcomes.append(per_item(report))
    header = f"{'concurrency':>11} {'wall':>8} {'calls':>6} {'repairs':>7} {'revisions':>9} {'judge':>6}"
    print(header + f" {'ideal':>8} {'ratio':>6}")
    for c, report, ideal, revisions, repairs, judge in rows:
        print(
            f"{c:>11} {report.wall_seconds:>7.2f}s {report.calls['total']:>6} {repairs:>7} {revisions:>9} "
            f"{judge:>6} {ideal:>7.2f}s {report.wall_seconds / ideal:>6.3f}"
        )
    base, par = rows[0], rows[1]
    assert par[1].store is not None
    counts = par[1].store.call_counts(par[1].run_id)
    print("calls by label: " + ", ".join(f"{label} {n}" for label, n in sorted(counts.items())))
    print("(repairs: research's broken contracts; judge calls include re-asking broken verdicts)")
    same = outcomes[0] == outcomes[1]
    differing = sum(outcomes[0].get(k) != outcomes[1].get(k) for k in outcomes[0].keys() | outcomes[1].keys())
    print(
        f"\nper-item outcomes identical (outputs, gate outcomes, each try's pass/fail, revisions, "
        f"repairs): {'yes' if same else f'NO ({differing} differ)'}"
    )
    speedup, ideal_speedup = base[1].wall_seconds / par[1].wall_seconds, base[2] / par[2]
    print(f"speedup at {args.concurrency} in flight over one at a time: {speedup:.2f}x", end=" ")
    print(f"(ideal {ideal_speedup:.2f}x)")
    worst = max(r[1].wall_seconds / r[2] for r in rows)
    print(f"worst ratio to ideal: {worst:.3f} ({'within' if worst <= 1.05 else 'OVER'} 5%)")
    return 0 if same and worst <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
