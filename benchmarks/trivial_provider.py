"""chainfleet's own CPU per call (issue 25): a trivial provider through the public API against a
bare ``asyncio.gather`` + ``Semaphore`` loop over the same provider, in the same process.

The provider (:class:`Echo`) answers a fixed 300-word reply after one turn of the event loop, so
nearly everything measured is the caller's own work. chainfleet runs it as the ``sim`` model
through ``chainfleet.arun(pipeline, items, providers={"sim": Echo()}, out=...)``: 2 stages x
5,000 items at -c 500, end to end with the output folder (results.jsonl, report.json/md/html,
timeline.png). The bare loop makes the same calls with the same prompts (an f-string each),
2 per item, at most 500 chains at once, and keeps the outputs in a dict.

Printed for each side, over ``--repeat`` runs (best of them, since a shared machine only ever
adds time): calls/s by wall time and CPU per call (``time.process_time``: this process's user +
system time, so other processes on the machine do not count), the ratio of calls/s, and
chainfleet's own CPU per call (its CPU per call minus the bare loop's). chainfleet's run phase
(to the last result kept, before the output folder) is printed apart, wall and CPU. Targets: own CPU <= 100 us
a call; calls/s ratio >= 0.12.

``--profile`` runs chainfleet once more under cProfile and prints the top entries by own time.

``--otel`` runs chainfleet with OpenTelemetry tracing on (issue 24), exporting every span and
metric over OTLP/HTTP to a sink in a child process (:data:`SINK`: it answers 200 to every POST
and keeps nothing), so the CPU measured includes making the spans and the SDK's export thread
serialising and sending them; ``--otel-sample 0.01`` keeps 1 item in 100 (the rest are made and
dropped at the item's end).

Example::

    python benchmarks/trivial_provider.py
    python benchmarks/trivial_provider.py --items 2000 --repeat 1 --profile
    python benchmarks/trivial_provider.py --otel
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chainfleet import Completion, CompletionRequest, Pipeline, Provider, arun

REPLY = " ".join(f"word{i % 50}" for i in range(300))
PIPELINE = {
    "name": "trivial",
    "model": "sim",
    "input": "topic",
    "stages": [
        {"name": "draft", "prompt": "Write about {{ topic }}.", "max_tokens": 400},
        {"name": "edit", "prompt": "Edit this:\n{{ draft }}", "max_tokens": 400},
    ],
}


#: an OTLP/HTTP receiver that takes every POST and keeps nothing (run in a child process, so
#: its CPU is not counted as chainfleet's)
SINK = """\
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""

#: the run's tracing settings (``--otel``): set by main
TRACING: dict[str, Any] = {}


class Echo(Provider):
    """A fixed 300-word reply after one turn of the event loop."""

    kind = "sim"

    async def complete(self, request: CompletionRequest) -> Completion:
        await asyncio.sleep(0)
        return Completion(text=REPLY, input_tokens=len(request.prompt) // 4, output_tokens=400)


async def bare(topics: list[str], concurrency: int) -> dict[str, str]:
    """The lesson's pattern over the same provider and prompts: gather + Semaphore."""
    echo, sem = Echo(), asyncio.Semaphore(concurrency)
    outs: dict[str, str] = {}

    async def chain(topic: str) -> None:
        async with sem:
            draft = await echo.complete(
                CompletionRequest(model="sim", prompt=f"Write about {topic}.", max_tokens=400)
            )
            edit = await echo.complete(
                CompletionRequest(model="sim", prompt=f"Edit this:\n{draft.text}", max_tokens=400)
            )
            outs[topic] = edit.text

    await asyncio.gather(*(chain(t) for t in topics))
    return outs


async def ours(
    topics: list[str], concurrency: int, out: Path, item_files: str = "auto"
) -> tuple[Any, tuple[float, float]]:
    """One chainfleet run with its output folder: (the report, (wall, CPU) when the run phase
    ended)."""
    marks: list[tuple[float, float]] = []
    report = await arun(
        Pipeline.from_dict(PIPELINE, source="trivial"),
        topics,
        out=out,
        concurrency=concurrency,
        providers={"sim": Echo()},
        on_output=lambda: marks.append((time.perf_counter(), time.process_time())),
        check_input=False,
        item_files=item_files,  # type: ignore[arg-type]
        **TRACING,
    )
    assert report.items_succeeded == len(topics), report.summary_lines()
    return report, marks[0]


def measure(topics: list[str], concurrency: int, root: Path, n: int, item_files: str) -> dict[str, float]:
    calls = 2 * len(topics)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    outs = asyncio.run(bare(topics, concurrency))
    wall1, cpu1 = time.perf_counter(), time.process_time()
    assert len(outs) == len(topics)
    _, (run_wall, run_cpu) = asyncio.run(ours(topics, concurrency, root / f"out{n}", item_files))
    wall2, cpu2 = time.perf_counter(), time.process_time()
    return {
        "bare_rate": calls / (wall1 - wall0),
        "bare_cpu": (cpu1 - cpu0) / calls,
        "rate": calls / (wall2 - wall1),
        "run_rate": calls / (run_wall - wall1),
        "cpu": (cpu2 - cpu1) / calls,
        "run_cpu": (run_cpu - cpu1) / calls,
    }


def profile(topics: list[str], concurrency: int, root: Path, top: int) -> None:
    profiler = cProfile.Profile(time.process_time)  # CPU: other processes do not count
    profiler.enable()
    asyncio.run(ours(topics, concurrency, root / "profiled"))
    profiler.disable()
    stats = pstats.Stats(profiler)
    print(f"\ncProfile (CPU time), {2 * len(topics):,} calls, top {top} by own time:")
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--concurrency", "-c", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="then profile one chainfleet run")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--otel", action="store_true", help="trace the runs, to a local OTLP sink")
    parser.add_argument("--otel-sample", type=float, default=1.0)
    parser.add_argument(
        "--item-files",
        default="auto",
        choices=["auto", "all", "none"],
        help="the per-item files (auto: all of them up to 10,000 items); none leaves out their "
        "file-system cost",
    )
    args = parser.parse_args()
    topics = [f"topic number {i} about the sea" for i in range(args.items)]
    sink = start_sink() if args.otel else None
    if sink is not None:
        TRACING.update(otel=True, otel_endpoint=sink[1], otel_sample=args.otel_sample)
        print(f"tracing on: every span and metric to a sink at {sink[1]} (sample {args.otel_sample:g})")
    print(
        f"{args.items:,} items x 2 stages = {2 * args.items:,} calls at -c {args.concurrency}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="chainfleet-trivial-") as tmp:
        runs = [measure(topics, args.concurrency, Path(tmp), n, args.item_files) for n in range(args.repeat)]
        best = {k: (min if "cpu" in k else max)(r[k] for r in runs) for k in runs[0]}
        own_us = (best["cpu"] - best["bare_cpu"]) * 1e6
        print(
            f"bare loop   {best['bare_rate']:>9,.0f} calls/s  CPU {best['bare_cpu'] * 1e6:6.1f} us/call\n"
            f"chainfleet  {best['rate']:>9,.0f} calls/s  CPU {best['cpu'] * 1e6:6.1f} us/call "
            f"(end to end; run phase {best['run_rate']:,.0f} calls/s, CPU "
            f"{best['run_cpu'] * 1e6:.1f} us/call)\n"
            f"ratio {best['rate'] / best['bare_rate']:.3f} (target >= 0.12); chainfleet's own CPU "
            f"{own_us:.0f} us/call (target <= 100); best of {args.repeat}; "
            f"load average after {os.getloadavg()[0]:.2f}"
        )
        if args.profile:
            profile(topics, args.concurrency, Path(tmp), args.top)
    if sink is not None:
        sink[0].terminate()
        sink[0].wait()


def start_sink() -> tuple[subprocess.Popen[bytes], str]:
    """The OTLP sink (:data:`SINK`) on a free loopback port, once it listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the OTLP sink did not start")


if __name__ == "__main__":
    main()
