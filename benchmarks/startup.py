"""Start-up cost of the ``chainfleet`` command (issue 25): each command timed from outside.

Three commands, each run N times (default 5) as a fresh child process exactly as the console
script runs it (``from chainfleet.cli import main; main()``) with this tree's sources first on
``PYTHONPATH``:

- ``chainfleet --help``;
- ``chainfleet run --help``;
- a one-item, one-stage sim run with zero latency (``chainfleet run p.yaml -i one.txt --out o
  --quiet``), from process start to exit, the output folder written.

For each it prints the median wall time, the median CPU time (user + system of the child, from
``os.wait4``) and the median peak RSS, with the load average, because the machine is shared.
Each command first runs once untimed, with ``PYTHONDONTWRITEBYTECODE`` taken out of the
child's environment, so the timed runs find the sources compiled (``__pycache__``) as an
installed package does, and report.html's compiled template in the user's cache folder, as a
user's second run does; compiling every module from source would otherwise be timed too.
Targets: ``--help`` and ``run --help`` at most 0.15 s CPU; the one-item run at most 0.4 s wall.

Example::

    python benchmarks/startup.py            # 5 runs each
    python benchmarks/startup.py --runs 9
    python benchmarks/startup.py --src ../main/src     # another tree, for before and after
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
LAUNCH = "import sys; sys.argv[0] = 'chainfleet'; from chainfleet.cli import main; main()"
PIPELINE = """\
name: startup
model: sim
sim: {latency: 0.0, jitter: 0.0, seed: 0}
input: topic
stages:
  - name: write
    prompt: "Write a short note on {{ topic }}."
"""


def timed(args: list[str], cwd: Path, src: Path) -> tuple[float, float, float, int]:
    """Run ``chainfleet *args`` once from the sources in ``src``: (wall s, CPU s, peak RSS MB,
    exit code)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the modules' bytecode kept, as once installed
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # already reaped by wait4
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, child.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--src", type=Path, default=SRC, help="the sources to time [default: this tree's]")
    args = parser.parse_args()
    print(f"{args.src}: load average before {os.getloadavg()[0]:.2f}; {args.runs} runs each; medians")
    print(f"{'command':<44} {'wall s':>7} {'CPU s':>7} {'peak MB':>8}  target")
    with tempfile.TemporaryDirectory(prefix="chainfleet-startup-") as tmp:
        root = Path(tmp)
        (root / "p.yaml").write_text(PIPELINE, encoding="utf-8")
        (root / "one.txt").write_text("the sea\n", encoding="utf-8")
        commands = [
            ("chainfleet --help", ["--help"], "CPU <= 0.15 s"),
            ("chainfleet run --help", ["run", "--help"], "CPU <= 0.15 s"),
            ("chainfleet run p.yaml -i one.txt (1 item)", None, "wall <= 0.4 s"),
        ]
        for label, argv, target in commands:
            rows = []
            for n in range(-1, args.runs):  # run -1: the untimed warm-up
                line = argv or ["run", "p.yaml", "-i", "one.txt", "--out", f"o{n + 1}", "--quiet"]
                wall, cpu, rss, code = timed(line, root, args.src.resolve())
                assert code == 0, f"{label} exited {code}"
                if n >= 0:
                    rows.append((wall, cpu, rss))
            wall, cpu, rss = (statistics.median(column) for column in zip(*rows, strict=True))
            print(f"{label:<44} {wall:>7.3f} {cpu:>7.3f} {rss:>8.0f}  {target}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
