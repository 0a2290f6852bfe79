"""Routes: one job over two targets, told nothing. How much of their combined limit does it use?

Two sim-servers (each in its own thread of this process, on 127.0.0.1) stand for two keys of
one provider, each at ``--rpm`` requests/min (default 600), ``--latency`` seconds a call
(default 0.05), answering 429 above their limit. One chainfleet run (``arun``) sends
``--chains`` 3-stage chains at ``-c`` 50 through a route over both, told nothing: it learns each
target's limit from its headers, and the ``spill`` policy sends a call to the second target
when the first cannot admit it within a second. (``--policy split`` with weights [1, 1]
shares them half and half instead.)

``--rpm-second`` gives the second target another limit (e.g. 300): spill then fills each to its
own limit, where split [1, 1] is paced by the smaller.

Prints, as one JSON object: the run's wall time, the successful calls per minute over it and
as a share of the combined limit (the two rpm added), the 429s as a share of all calls, and each server's
counts.

    python benchmarks/routes.py --chains 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from chainfleet import arun
from chainfleet.pipeline import Pipeline
from chainfleet.sim.server import SimServerSettings, SimServerThread

KEYS = ("sk-bench-route-a", "sk-bench-route-b")


def pipeline(urls: list[str], policy: str) -> Pipeline:
    route: dict[str, Any] = {
        "policy": policy,
        "targets": [
            {"model": "openai:gpt-sim", "api_key_env": f"BENCH_KEY_{i}", "base_url": f"{url}/v1"}
            for i, url in enumerate(urls)
        ],
    }
    if policy == "split":
        route["weights"] = [1, 1]
    stages = [
        {"name": "research", "prompt": "Research {{ topic }}.", "max_tokens": 200},
        {"name": "write", "prompt": "Write on {{ topic }}: {{ research }}", "max_tokens": 200},
        {"name": "edit", "prompt": "Edit: {{ write }}", "max_tokens": 200},
    ]
    return Pipeline(model="pair", input="topic", routes={"pair": route}, stages=stages)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    limits = (args.rpm, args.rpm_second or args.rpm)
    servers = [
        SimServerThread(SimServerSettings(api_keys=(key,), rpm=rpm, latency=args.latency))
        for key, rpm in zip(KEYS, limits, strict=True)
    ]
    urls = [server.start() for server in servers]
    for i, key in enumerate(KEYS):
        os.environ[f"BENCH_KEY_{i}"] = key
    try:
        items = [f"topic {i}" for i in range(args.chains)]
        chain = pipeline(urls, args.policy)
        report = await arun(chain, items, concurrency=args.concurrency, check_input=False)
        stats = [server.stats() for server in servers]
    finally:
        for server in servers:
            server.stop()
    ok = sum(s["ok"] for s in stats)
    calls = sum(s["calls"] for s in stats)
    refused = sum(s["rate_limited"] for s in stats)
    per_minute = ok / report.wall_seconds * 60 if report.wall_seconds else 0.0
    return {
        "policy": args.policy,
        "chains": args.chains,
        "rpm": limits,
        "wall_s": round(report.wall_seconds, 1),
        "ok_per_min": round(per_minute, 1),
        "share_of_combined_pct": round(100 * per_minute / sum(limits), 1),
        "rate_limited_pct": round(100 * refused / calls, 2) if calls else 0.0,
        "servers": [{k: s[k] for k in ("calls", "ok", "rate_limited")} for s in stats],
        "moves": (report.routes or {}).get("pair", {}).get("moves"),
        "items_succeeded": report.items_succeeded,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chains", type=int, default=300)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--rpm-second", type=int, default=None, help="the second target rpm (default: --rpm)")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", "-c", type=int, default=50)
    parser.add_argument("--policy", choices=("spill", "split", "fallback"), default="spill")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
