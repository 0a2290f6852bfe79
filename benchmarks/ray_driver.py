"""The Ray driver's CPU per committed stage result (issue 25, item 4).

On Ray the driver is the one writer of the run store: every stage result of every worker comes
back to it to be committed. This measures what that costs the driver. A ``chainfleet
sim-server`` (zero latency, no limits) runs in its own process, so its work is not counted; the
Ray node runs on this machine (127.0.0.1) with ``--workers`` worker actors; this process is the
driver. Printed: the driver's CPU (``time.process_time``: every thread of this process, Ray's
own included) per stage result over the run phase and end to end, and from it the most results
one driver could commit per second of one core.

Example::

    python benchmarks/ray_driver.py --items 300 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from chainfleet import Pipeline, arun
from chainfleet.backends.ray_cluster import connect

STAGES = 3


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def one_run(items: list[str], concurrency: int, workers: int) -> dict[str, float]:
    marks: list[float] = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        report = await arun(
            pipeline(),
            items,
            out=Path(folder) / "run",
            concurrency=concurrency,
            backend="ray",
            workers=workers,
            on_output=lambda: marks.append(time.process_time()),
        )
    assert report.items_succeeded == len(items), report.summary_lines()
    results = len(items) * STAGES
    return {
        "run_cpu": (marks[0] - cpu0) / results,
        "cpu": (time.process_time() - cpu0) / results,
        "wall": time.perf_counter() - wall0,
        "rate": report.calls["total"] / report.wall_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--concurrency", "-c", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    port = free_port()
    launch = "import sys; sys.argv[0] = 'chainfleet'; from chainfleet.cli import main; main()"
    server = subprocess.Popen(
        [sys.executable, "-c", launch, "sim-server", "--port", str(port), "--latency", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update(OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY="sim")
    connection: Any = None
    try:
        time.sleep(3)  # the server's start-up
        connection = connect(None, num_cpus=2)
        items = [f"topic number {i}" for i in range(args.items)]
        asyncio.run(one_run(items[:20], args.concurrency, args.workers))  # workers warm
        row = asyncio.run(one_run(items, args.concurrency, args.workers))
        print(
            f"{args.items} items x {STAGES} stages, {args.workers} workers, -c {args.concurrency}, "
            f"load average {os.getloadavg()[0]:.1f}\n"
            f"driver CPU per committed stage result: run phase {row['run_cpu'] * 1e6:,.0f} us, "
            f"end to end {row['cpu'] * 1e6:,.0f} us\n"
            f"one driver core commits at most {1 / row['run_cpu']:,.0f} results/s "
            f"({60 / row['run_cpu']:,.0f} a minute); this run: {row['rate']:,.0f} calls/s"
        )
    finally:
        if connection is not None:
            connection.close()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
