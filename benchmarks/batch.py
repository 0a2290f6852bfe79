"""Batch mode against online mode on the sim-server: cost, requests, the driver's CPU and memory.

The same 3-stage chain over N items (10,000 by default) on ``openai:gpt-4o-mini`` through the
sim-server, once online (``-c 64``) and once with ``--batch``; each run is a ``chainfleet run``
child process, so its CPU time and peak memory (``wait4``'s rusage) are the driver's alone (the
sim-server runs in this process). Both modes meet the same share of failures (2% errored, and
in batch mode 1% expired besides), so the request ratio shows what resubmission costs.

Prints, for each mode: items done, requests sent per (item, stage) (1.0 plus resubmissions),
cost, and the driver's CPU seconds and peak RSS; then batch / online ratios.

    python benchmarks/batch.py               # 10,000 items
    python benchmarks/batch.py --items 2000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from chainfleet.sim.batch import BatchSimSettings
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
KEY = "sk-bench-batch-0000000000"

PIPELINE: dict[str, Any] = {
    "name": "content",
    "model": "openai:gpt-4o-mini",
    "input": "topic",
    "batch": {"window": 1.0, "poll": 0.5, "poll_max": 2.0},
    "stages": [
        {"name": "research", "prompt": "Research {{ topic }}: the key facts.", "max_tokens": 120},
        {"name": "write", "prompt": "Write on {{ topic }} from:\n{{ research }}", "max_tokens": 160},
        {"name": "edit", "prompt": "Edit this draft:\n{{ write }}", "max_tokens": 160},
    ],
}


def run_mode(sim: SimServerThread, folder: Path, mode: str, items: int) -> dict[str, Any]:
    out = folder / mode
    args = [CHAINFLEET, "run", str(folder / "p.yaml"), "-i", str(folder / "t.txt"), "--out", str(out), "-q"]
    args += ["--batch"] if mode == "batch" else ["-c", "64"]
    env = {"PATH": os.environ.get("PATH", ""), "OPENAI_BASE_URL": f"{sim.url}/v1", "OPENAI_API_KEY": KEY}
    calls_before = sim.stats()["calls"]
    batch_before = sim._call(sim.server.batch.stats)["requests_submitted"]
    started = time.monotonic()
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} run failed: {child.stderr.read().decode() if child.stderr else ''}")
    report = json.loads((out / "report.json").read_text())
    if mode == "batch":
        requests = sim._call(sim.server.batch.stats)["requests_submitted"] - batch_before
    else:
        requests = sim.stats()["calls"] - calls_before
    return {
        "items": report["items"]["succeeded"],
        "request_ratio": requests / (items * len(PIPELINE["stages"])),
        "requests": requests,
        "cost_usd": report["cost_usd"],
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "wall_seconds": wall,
        "batch": report.get("batch"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()
    settings = SimServerSettings(api_keys=(KEY,), error_rate=0.02)
    batch = BatchSimSettings(delay=1.0, error_rate=0.02, expire_rate=0.01)
    with tempfile.TemporaryDirectory() as tmp, SimServerThread(settings, batch=batch) as sim:
        folder = Path(tmp)
        (folder / "p.yaml").write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
        (folder / "t.txt").write_text("".join(f"topic number {i}\n" for i in range(1, args.items + 1)))
        results = {mode: run_mode(sim, folder, mode, args.items) for mode in ("online", "batch")}
    print(
        f"{args.items:,} items x 3 stages, openai:gpt-4o-mini on the sim-server (2% errors; batch 1% expired)"
    )
    print(
        f"{'mode':<8}{'items':>8}{'requests':>10}{'req ratio':>11}{'cost $':>10}"
        f"{'CPU s':>8}{'peak MiB':>10}{'wall s':>8}"
    )
    for mode, r in results.items():
        print(
            f"{mode:<8}{r['items']:>8,}{r['requests']:>10,}{r['request_ratio']:>11.4f}{r['cost_usd']:>10.4f}"
            f"{r['cpu_seconds']:>8.1f}{r['peak_rss_mib']:>10.1f}{r['wall_seconds']:>8.1f}"
        )
    on, ba = results["online"], results["batch"]
    print(
        f"batch / online: cost {ba['cost_usd'] / on['cost_usd']:.3f}, "
        f"requests {ba['requests'] / on['requests']:.3f}, CPU {ba['cpu_seconds'] / on['cpu_seconds']:.2f}, "
        f"peak memory {ba['peak_rss_mib'] / on['peak_rss_mib']:.2f}"
    )
    if ba["batch"]:
        print(f"batch chunks: {ba['batch']['chunks']}; requests: {ba['batch']['requests']}")


if __name__ == "__main__":
    main()
