"""The output at scale (issue 11): N items, one stage, zero latency on sim, -c 500.

Runs ``chainfleet.arun`` in this process with an output folder and measures:

- the run phase (from the call to ``arun``, input scan included, to the last result saved) and
  the output phase (from then to the last file written: the report built from the store,
  results.jsonl, results.parquet with ``--parquet``, per-item files when
  ``--item-files`` says so, report.json/md/html and the timeline);
- peak RSS (``ru_maxrss``) at the end of each phase;
- the output folder's size (every file, run.db apart) and the number of files in it;
- files written: every ``open()`` for writing seen by an audit hook (``sys.addaudithook``), and
  whether any path was opened for writing twice (SQLite's own writes are not Python opens).

Ratios printed: the output phase against the run phase (target < 25% at 1M) and against a
baseline measured in the same process: reading every item back from the store and writing it
as JSON lines with nothing else (the floor any output phase pays).

Example::

    python benchmarks/scale.py --items 100000
    python benchmarks/scale.py --items 1000000 --item-files none
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chainfleet import Pipeline, arun
from chainfleet.store.runstore import RunStore

PIPELINE = {
    "name": "scale",
    "model": "sim",
    "sim": {"latency": 0.0, "jitter": 0.0, "seed": 0},
    "input": "topic",
    "stages": [{"name": "write", "prompt": "Write a short note on {{ topic }}.", "max_tokens": 120}],
}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Writes:
    """Every path this process opens for writing (an audit hook: it sees every ``open``)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.counts: Counter[str] = Counter()
        self.active = False
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or event != "open" or not args or not isinstance(args[0], str | Path):
            return
        path, mode = str(args[0]), args[1] if len(args) > 1 else "r"
        flags = args[2] if len(args) > 2 else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
        )
        if (
            writing
            and path.startswith(self.root)
            and not path.endswith(("run.db", "-wal", "-shm", "-journal"))
        ):
            self.counts[path] += 1


def folder_size(out: Path) -> tuple[int, int]:
    files = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith("run.db")]
    return len(files), sum(p.stat().st_size for p in files)


def baseline_seconds(out: Path) -> float:
    """Read every item back from the store and write it as JSON lines: the floor."""
    start = time.perf_counter()
    with RunStore.open(out / "run.db") as store, open(os.devnull, "w", encoding="utf-8") as sink:
        (run,) = store.runs()
        for record in store.items(run["run_id"]):
            sink.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--concurrency", "-c", type=int, default=500)
    parser.add_argument("--item-files", default="auto", choices=["auto", "all", "none"])
    parser.add_argument("--parquet", action="store_true", help="also write results.parquet (pyarrow)")
    parser.add_argument("--out", help="output folder [default: a temporary one, deleted after]")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="chainfleet-scale-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        topics = root / "topics.txt"
        root.mkdir(parents=True, exist_ok=True)
        with topics.open("w", encoding="utf-8") as file:
            for i in range(args.items):
                file.write(f"topic number {i} about the sea\n")
        out = root / "out"
        writes = Writes(out)
        marks: dict[str, float] = {}
        runners: list[Any] = []

        def on_output() -> None:
            # the run phase ends with the last result (SystemClock is perf_counter); building
            # the report from the store, before this hook, is output work
            marks["output"] = runners[0].stats.last_result
            marks["rss_run"] = rss_mb()
            writes.active = True

        pipeline = Pipeline.from_dict(PIPELINE, source="scale")
        marks["start"] = time.perf_counter()
        report = asyncio.run(
            arun(
                pipeline,
                str(topics),
                out=out,
                concurrency=args.concurrency,
                on_start=runners.append,
                on_output=on_output,
                item_files=args.item_files,
                parquet=args.parquet,
            )
        )
        marks["end"] = time.perf_counter()
        writes.active = False
        rss_end = rss_mb()
        files, size = folder_size(out)
        twice = [p for p, n in writes.counts.items() if n > 1]
        floor = baseline_seconds(out)

        run_phase = marks["output"] - marks["start"]
        output_phase = marks["end"] - marks["output"]
        db_mb = (out / "run.db").stat().st_size / 1e6
        opened = sum(writes.counts.values())
        lines = [
            f"items {args.items:,} (one stage, sim latency 0, -c {args.concurrency}, item files "
            f"{args.item_files}, parquet {args.parquet}); succeeded {report.items_succeeded:,}",
            f"run phase    {run_phase:8.1f} s  (wall {report.wall_seconds:.1f} s; "
            f"peak RSS by then {marks['rss_run']:.0f} MB)",
            f"output phase {output_phase:8.1f} s  = {output_phase / run_phase:.1%} of the run phase "
            "(target < 25%)",
            f"baseline     {floor:8.1f} s  (store -> JSON lines, nothing else): the output phase is "
            f"{output_phase / floor:.2f}x it",
            f"peak RSS     {rss_end:8.0f} MB (target < 250 MB)",
            f"output       {size / 1e6:8.1f} MB in {files:,} files (run.db apart: {db_mb:.1f} MB)",
            f"files written: {opened:,} opens for writing of {len(writes.counts):,} paths; "
            f"written twice: {len(twice)} (target 0)",
            *[f"  twice: {path}" for path in twice[:5]],
        ]
        print("\n".join(lines))


if __name__ == "__main__":
    main()
