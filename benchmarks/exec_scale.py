"""``chainfleet exec`` with a trivial command over many items: items per second, and the CPU
chainfleet itself spends per item.

Runs ``chainfleet exec -i N-lines.txt -c C -q -- true`` (``true``: starts, does nothing, exits
0) in a child process whose own CPU time (user + system, ``RUSAGE_SELF``: chainfleet's process
alone, not the commands it started) is written out as it exits. What a command costs to start
is the operating system's and the command's; what is left per item is chainfleet's: admission,
the child's environment and token, the run store's item rows, the report and results.jsonl.

Run:  python benchmarks/exec_scale.py [--items 10000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: chainfleet's command, writing its own CPU seconds to the file named by CHAINFLEET_CPU at exit
LAUNCHER = """\
import atexit, json, os, resource
def keep():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.environ["CHAINFLEET_CPU"], "w") as file:
        json.dump({"user": usage.ru_utime, "system": usage.ru_stime}, file)
atexit.register(keep)
from chainfleet.cli import main
main()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} before the run")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items = folder / "items.txt"
        items.write_text("".join(f"item {n}\n" for n in range(args.items)))
        cpu_file = folder / "cpu.json"
        env = {**os.environ, "PYTHONPATH": SRC, "CHAINFLEET_CPU": str(cpu_file)}
        command = [sys.executable, "-c", LAUNCHER, "exec", "-i", str(items), "-c", str(args.concurrency)]
        command += ["-o", str(folder / "out"), "-q", "--", "true"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"exec failed ({proc.returncode}): {proc.stderr[-2000:]}")
        own = json.loads(cpu_file.read_text())
        rows = (folder / "out" / "results.jsonl").read_text().count('"status": "succeeded"')
    mine = own["user"] + own["system"]
    everything = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(proc.stdout.strip().splitlines()[0])
    rate = args.items / wall
    print(f"{args.items:,} items of `true` at -c {args.concurrency}: {wall:.1f} s wall, {rate:,.0f} items/s")
    print(f"  succeeded: {rows:,}")
    print(
        f"  chainfleet's own CPU: {mine:.1f} s ({mine / args.items * 1e3:.2f} ms per item); "
        f"with the commands it started: {everything:.1f} s ({everything / args.items * 1e3:.2f} ms per item)"
    )
    print(f"  load {os.getloadavg()[0]:.1f} after the run")


if __name__ == "__main__":
    main()
