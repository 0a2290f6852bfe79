"""The "one at a time" estimate on servers that queue, against a measured one-at-a-time run.

A sim server with ``--slots N`` (N served at once, the rest wait inside the server, as llama.cpp
and Ollama do) runs in this process on 127.0.0.1; each (slots, -c) row runs the 3-stage chain
(research -> write -> edit on ``openai:gpt-sim``) over the same items with ``arun``, and compares
the run's reported ``sequential_seconds`` with the wall time of a ``-c 1`` run of the same
items measured first on the same server (the baseline, in the same process). The plain sum of
latencies (what the report said before the estimate) is shown beside it.

    python benchmarks/queue_estimate.py                  # slots 1 and 8, -c 4, 8, 32
    python benchmarks/queue_estimate.py --items 24 --latency 0.2 --slots 1,4,8

Target (issue 11): |error| < 10% at -c 4, 8 and 32.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from chainfleet.pipeline import Pipeline
from chainfleet.runner.api import arun
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-bench-queue-0123456789"
PIPELINE = """\
name: queued
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}."
    max_tokens: 40
  - name: write
    prompt: "Write on {{ topic }} from:\\n{{ research }}"
    max_tokens: 40
  - name: edit
    prompt: "Edit:\\n{{ write }}"
    max_tokens: 40
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2, help="the server's service time, seconds")
    parser.add_argument("--slots", default="1,8")
    parser.add_argument("--concurrency", default="4,8,32")
    args = parser.parse_args()
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,)))
    sim.start()
    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = f"{sim.url}/v1", KEY
    try:
        with tempfile.TemporaryDirectory() as tmp:
            table(Path(tmp), sim, args)
    finally:
        sim.stop()


def table(tmp: Path, sim: SimServerThread, args: argparse.Namespace) -> None:
    (tmp / "p.yaml").write_text(PIPELINE, encoding="utf-8")
    pipeline = Pipeline.from_yaml(tmp / "p.yaml")
    items = [f"topic {i}" for i in range(args.items)]
    print(f"{args.items} items x 3 stages, service time {args.latency} s + up to 10%, 127.0.0.1 sim server")
    print(
        f"{'slots':>5} {'-c':>4} {'wall s':>7} {'-c 1 s':>7} {'estimate s':>10} {'error %':>8} "
        f"{'summed s':>9} {'sum err %':>9}  method"
    )
    worst = 0.0
    for slots in (int(x) for x in args.slots.split(",")):
        base = SimServerSettings(api_keys=(KEY,), slots=slots, latency=args.latency, jitter=args.latency / 10)
        sim.configure(**base.model_dump())
        measured = asyncio.run(arun(pipeline, items, concurrency=1, out=tmp / f"s{slots}c1", cache=False))
        for c in (int(x) for x in args.concurrency.split(",")):
            started = time.monotonic()
            report = asyncio.run(arun(pipeline, items, concurrency=c, out=tmp / f"s{slots}c{c}", cache=False))
            assert report.items_succeeded == len(items), f"{time.monotonic() - started:.1f} s, failures"
            est = report.sequential_estimate or {}
            error = 100 * (report.sequential_seconds - measured.wall_seconds) / measured.wall_seconds
            summed = float(est.get("observed_seconds", 0.0))
            sum_error = 100 * (summed - measured.wall_seconds) / measured.wall_seconds
            worst = max(worst, abs(error))
            print(
                f"{slots:>5} {c:>4} {report.wall_seconds:>7.2f} {measured.wall_seconds:>7.2f} "
                f"{report.sequential_seconds:>10.2f} {error:>+8.1f} {summed:>9.2f} {sum_error:>+9.1f}  "
                f"{est.get('method')} ({est.get('samples')} samples)",
                flush=True,
            )
    print(f"worst |error|: {worst:.1f}% (target < 10%)")


if __name__ == "__main__":
    main()
