"""Four jobs sharing one key: each job's "one at a time would take" against four jobs measured
at -c 1 on the same key (issue 24, item 4: four jobs each claimed 0.30-0.37x, "slower than one
at a time", where a measured -c 1 run gave about 1.0x).

The sim-server holds 1,200 requests/min (a minute's bucket paced by a short one), 50 ms a call,
told nothing; each job is 75 topics x 3 stages. First the four jobs at ``-c 40`` at once (each
report's figure), then the four at ``-c 1`` at once (what one at a time takes while the others
share the key).

Run:  python benchmarks/estimate_shared.py [--items 75] [--jobs 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from chainfleet import Pipeline, arun
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-estimate-shared-0123456789"
PIPELINE = {
    "name": "shared",
    "input": "topic",
    "model": "openai:gpt-sim",
    "stages": [
        {"name": "research", "prompt": "Research {{ topic }}.", "max_tokens": 60},
        {"name": "write", "prompt": "Write about {{ research }}.", "max_tokens": 60},
        {"name": "edit", "prompt": "Edit {{ write }}.", "max_tokens": 60},
    ],
}


async def jobs(pipeline: Pipeline, n: int, items: int, concurrency: int, out: Path) -> list[dict[str, Any]]:
    runs = [
        arun(
            pipeline, [f"job {j} topic {i}" for i in range(items)], concurrency=concurrency, out=out / str(j)
        )
        for j in range(n)
    ]
    return [report.to_dict() for report in await asyncio.gather(*runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=75)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,), rpm=1200, latency=0.05))
    sim.start()
    os.environ.update(OPENAI_BASE_URL=f"{sim.url}/v1", OPENAI_API_KEY=KEY)
    pipeline = Pipeline.from_dict(PIPELINE)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            parallel = asyncio.run(jobs(pipeline, args.jobs, args.items, 40, Path(tmp) / "c40"))
            sim.reset()
            single = asyncio.run(jobs(pipeline, args.jobs, args.items, 1, Path(tmp) / "c1"))
    finally:
        sim.stop()
    measured = statistics.mean(d["wall_seconds"] for d in single)
    print(f"{args.jobs} jobs on one key of 1,200/min, 50 ms a call, -c 40 each, told nothing")
    print(f"measured at -c 1 (the {args.jobs} jobs at once): mean {measured:.1f} s")
    for d in parallel:
        figure = d["sequential_seconds"]
        print(
            f"  job wall {d['wall_seconds']:.1f} s; its report: one at a time {figure:.1f} s, "
            f"speed-up {d['speedup']:.2f}x; figure / measured -c 1 {figure / measured:.2f}x"
        )


if __name__ == "__main__":
    main()
