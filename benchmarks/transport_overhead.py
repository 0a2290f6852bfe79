"""What the Python door's transport costs over the bare official SDK, against the same server.

Starts ``chainfleet sim-server`` (zero latency, no limits) in its own process, then makes the
same N calls with the openai SDK at the same concurrency two ways, in one run:

- bare: ``openai.AsyncOpenAI(max_retries=0)``, ``asyncio.gather`` + ``Semaphore``;
- chainfleet: the user's own chain ``async def research(topic, fleet)`` making the same call
  with ``fleet.openai()`` (its HTTP through :class:`chainfleet.code.FleetTransport`), run by
  ``chainfleet.arun`` at ``-c N``: the journal lookup and write (durable before the answer),
  the limiter, the retry policy, the calls table, the runner, the report.

Prints calls/s for each and the ratio (the share of the bare SDK's throughput kept). With a
zero-latency server both sides are bound by the client's CPU; against a real model (hundreds
of ms a call) the difference disappears into the latency.

Run:  python benchmarks/transport_overhead.py [--calls 2000] [--concurrency 50] [--rounds 3] [--out DIR]

Both sides run ``--rounds`` times, alternating; the best of each side and the median of the
rounds' ratios are printed (on a shared machine a busy spell otherwise decides the figure).
(``--out`` keeps the run store on disk, as ``chainfleet run`` does: every journal write is then
committed before its answer goes back; without it the store is a temporary file.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai

import chainfleet

KEY = "sim-bench"
MODEL = "gpt-sim"


def start_server() -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).parent / "chainfleet"
    proc = subprocess.Popen([str(exe), "sim-server", "--port", "0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if not match:
        proc.kill()
        raise SystemExit(f"sim-server did not start: {line!r}")
    return proc, match.group(0)


class Timed:
    """One side's round: calls/s over the whole run, and (chainfleet with ``--out``) over the
    calls phase alone (until the output folder starts being written); CPU ms per call."""

    def __init__(self, rate: float, calls_rate: float, cpu_ms: float, cpu_ms_whole: float) -> None:
        self.rate, self.calls_rate, self.cpu_ms, self.cpu_ms_whole = rate, calls_rate, cpu_ms, cpu_ms_whole


async def bare(url: str, prompts: list[str], concurrency: int) -> Timed:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> str:
        async with sem:
            reply = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=200
            )
            return str(reply.choices[0].message.content)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(p) for p in prompts))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await client.close()
    rate = len(prompts) / elapsed
    return Timed(rate, rate, cpu * 1000 / len(prompts), cpu * 1000 / len(prompts))


async def through_the_transport(url: str, topics: list[str], concurrency: int, out: Path | None) -> Timed:
    async def research(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=f"{url}/v1", api_key=KEY)
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Research {topic}."}], max_tokens=200
        )
        return str(reply.choices[0].message.content)

    calls_done: list[tuple[float, float]] = []

    def output_starts() -> None:
        calls_done.append((time.perf_counter(), time.process_time()))

    options: dict[str, Any] = {"out": out, "force": True} if out is not None else {}
    started, cpu = time.perf_counter(), time.process_time()
    report = await chainfleet.arun(
        research, topics, concurrency=concurrency, check_input=False, on_output=output_starts, **options
    )
    elapsed, cpu_whole = time.perf_counter() - started, time.process_time() - cpu
    assert report.items_succeeded == len(topics), report.summary_lines()
    ended, cpu_ended = calls_done[0] if calls_done else (time.perf_counter(), time.process_time())
    rate = len(topics) / elapsed
    per_call = (cpu_ended - cpu) * 1000 / len(topics)
    return Timed(rate, len(topics) / (ended - started), per_call, cpu_whole * 1000 / len(topics))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    proc, url = start_server()
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        os.environ.pop(name, None)
    try:
        topics = [f"topic {i}" for i in range(args.calls)]
        prompts = [f"Research {t}." for t in topics]
        print(f"machine: {platform.platform()}, Python {sys.version.split()[0]}, openai {openai.__version__}")
        where = f"run store in {args.out}" if args.out else "temporary run store"
        print(f"{args.calls} calls at -c {args.concurrency}, zero-latency sim-server (own process), {where}")
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        asyncio.run(bare(url, prompts[:50], args.concurrency))  # warm up connections and imports
        print(
            f"{'round':>5} {'bare SDK':>12} {'transport':>12} {'ratio':>7}   {'calls phase':>12} {'ratio':>7}"
            f"   {'CPU ms/call bare':>16} {'transport':>10} {'calls phase':>11}"
        )
        pairs = []
        for number in range(1, args.rounds + 1):  # alternating, so a busy spell hits both sides
            b = asyncio.run(bare(url, prompts, args.concurrency))
            if args.out is not None:
                shutil.rmtree(args.out, ignore_errors=True)
            o = asyncio.run(through_the_transport(url, topics, args.concurrency, args.out))
            pairs.append((b, o))
            print(
                f"{number:>5} {b.rate:>10,.0f}/s {o.rate:>10,.0f}/s {o.rate / b.rate:>7.2f}   "
                f"{o.calls_rate:>10,.0f}/s {o.calls_rate / b.rate:>7.2f}   "
                f"{b.cpu_ms:>16.2f} {o.cpu_ms_whole:>10.2f} {o.cpu_ms:>11.2f}"
            )
        median = sorted(o.rate / b.rate for b, o in pairs)[len(pairs) // 2]
        phase = sorted(o.calls_rate / b.rate for b, o in pairs)[len(pairs) // 2]
        cpu = sorted(b.cpu_ms / o.cpu_ms for b, o in pairs)[len(pairs) // 2]
        print(
            f"median ratio {median:.2f} whole run; {phase:.2f} calls phase; "
            f"{cpu:.2f} by CPU per call (calls phase)"
        )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
