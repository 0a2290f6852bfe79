"""The Ray backend's throughput against a zero-latency sim-server, and the limiter's cost.

One Ray node on this machine (started as chainfleet starts one: 127.0.0.1 only), one sim-server
thread answering the OpenAI wire format at once. The same 3-stage chain over the same items:

1. the local backend (the peer), then the Ray backend with 1, 2 and 4 workers: calls/s in the
   run phase (first admission to last result, as report.json's wall_seconds), each as a ratio
   to the local backend's;
2. the limiter: 4 workers with a told limit high enough never to bind (so every call goes
   through a leased block) against the same run told nothing; leases per call, and the time one
   lease takes from a worker-like caller (sequential round trips to the limiter actor).

Run:  python benchmarks/ray_scale.py [--items 300] [--concurrency 32]
Zero-latency calls measure chainfleet's own cost per call; with real model latency (seconds a
call) the workers' share of it is what scales.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chainfleet import Pipeline
from chainfleet.backends.ray_cluster import connect
from chainfleet.runner.api import arun
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-bench-0123456789"


def pipeline() -> Pipeline:
    return Pipeline.from_dict(
        {
            "model": "openai:gpt-sim",
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}.", "max_tokens": 40},
                {"name": "write", "prompt": "Write on {{ topic }} from:\n{{ research }}", "max_tokens": 40},
                {"name": "edit", "prompt": "Edit:\n{{ write }}", "max_tokens": 40},
            ],
        }
    )


async def one_run(items: list[str], concurrency: int, **kwargs: Any) -> tuple[float, float, Any, int]:
    """(calls/s in the run phase, set-up seconds, report, leases taken from limiter actors)."""
    started = time.perf_counter()
    runners: list[Any] = []
    with tempfile.TemporaryDirectory() as folder:
        report = await arun(
            pipeline(),
            items,
            out=Path(folder) / "run",
            concurrency=concurrency,
            on_start=runners.append,
            **kwargs,
        )
    total = time.perf_counter() - started
    leases = sum(getattr(runners[0].backend, "leases", {}).values())
    return report.calls["total"] / report.wall_seconds, total - report.wall_seconds, report, leases


def lease_latency(ray: Any, rounds: int = 300) -> float:
    """Seconds one lease takes, asked back to back from the driver: the round trip alone.

    The actor is unmetered (its gate only): a metered one would make each lease wait for its
    block's budget to accrue (told limits start empty), which is the rate, not the overhead."""
    from chainfleet.backends.ray_limits import SharedLimits

    actor = ray.remote(num_cpus=0)(SharedLimits).remote(rpm=None, tpm=None, workers=1)
    ray.get(actor.lease.remote(10, (0, 0.0), None))
    started = time.perf_counter()
    for _ in range(rounds):
        ray.get(actor.lease.remote(10, (0, 0.0), None))
    seconds = (time.perf_counter() - started) / rounds
    ray.kill(actor)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    items = [f"topic number {i}" for i in range(args.items)]
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0.0))
    sim.start()
    os.environ.update(OPENAI_BASE_URL=f"{sim.url}/v1", OPENAI_API_KEY=KEY)
    started = time.perf_counter()
    connection = connect(None, num_cpus=2)
    print(f"Ray node up in {time.perf_counter() - started:.1f}s (127.0.0.1 only)")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {platform.platform()}")
    print(f"{args.items} items x 3 stages = {3 * args.items} zero-latency calls, -c {args.concurrency}\n")
    try:
        asyncio.run(measure(items, args.concurrency, connection.ray))
    finally:
        connection.close()
        sim.stop()


async def measure(items: list[str], concurrency: int, ray: Any) -> None:
    local, _, _, _ = await one_run(items, concurrency)
    print(f"{'backend':<22}{'calls/s':>10}{'vs local':>10}{'set-up s':>10}")
    print(f"{'local':<22}{local:>10,.0f}{1.0:>10.2f}{0.0:>10.1f}")
    for workers in (1, 2, 4):
        rate, setup, _, _ = await one_run(items, concurrency, backend="ray", workers=workers)
        print(f"{f'ray, {workers} workers':<22}{rate:>10,.0f}{rate / local:>10.2f}{setup:>10.1f}")
    print()
    free, _, _, free_leases = await one_run(items, concurrency, backend="ray", workers=4)
    # 600,000 rpm = 10,000/s: blocks of 625 requests, never binding at these rates
    told, _, report, leases = await one_run(items, concurrency, backend="ray", workers=4, rpm=600_000)
    calls = report.calls["total"]
    print(f"4 workers told 600,000 rpm (never binds): {told:,.0f} calls/s; told nothing: {free:,.0f} calls/s")
    print(f"  ratio {told / free:.2f}; leases {leases} for {calls} calls ({leases / calls:.4f} a call);")
    limited = report.calls["rate_limited"]
    print(f"  told nothing: {free_leases} leases (the gate only); {limited} rate-limited")
    latency = lease_latency(ray)
    print(f"one lease from the limiter actor: {latency * 1e3:.2f} ms (sequential, from the driver)")
    print(f"limiter cost per call at most: {latency * leases / calls * 1e6:.1f} us of lease round trips")


if __name__ == "__main__":
    main()
