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

``--backend ray`` runs the chains in ``--workers`` Ray actors (a Ray node started here): each
target's limit is then held by one limiter actor that the workers lease from, and spill decides
on the cluster's view of it.

    python benchmarks/routes.py --chains 300 --backend ray --workers 2

``--peer litellm`` (issue 23) runs LiteLLM's Router in the same invocation, after chainfleet,
each variant on fresh servers with the same two limits: told nothing, ``rpm`` set on each
deployment, and ``rpm`` set with ``usage-based-routing-v2`` (``benchmarks/peers/litellm_router.py``
says how it is driven). It prints one line per tool beside chainfleet's. LiteLLM is not a
dependency of chainfleet: ``pip install litellm`` (or ``benchmarks/peers/setup.sh``); without it
the run says so and measures chainfleet alone. Offline: ``LITELLM_LOCAL_MODEL_COST_MAP=True``.

    python benchmarks/routes.py --chains 300 --peer litellm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
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


async def serve(
    args: argparse.Namespace, run: Callable[[list[str]], Awaitable[tuple[int, dict[str, Any]]]]
) -> dict[str, Any]:
    """Two fresh sim-servers at the benchmark's limits, ``run(urls)`` against them (items that
    finished and a diagnosis), and what the servers counted."""
    limits = (args.rpm, args.rpm_second or args.rpm)
    servers = [
        SimServerThread(SimServerSettings(api_keys=(key,), rpm=rpm, latency=args.latency))
        for key, rpm in zip(KEYS, limits, strict=True)
    ]
    urls = [server.start() for server in servers]
    for i, key in enumerate(KEYS):
        os.environ[f"BENCH_KEY_{i}"] = key
    try:
        began = time.monotonic()
        items_ok, diagnosis = await run(urls)
        wall = time.monotonic() - began
        stats = [server.stats() for server in servers]
    finally:
        for server in servers:
            server.stop()
    ok = sum(s["ok"] for s in stats)
    calls = sum(s["calls"] for s in stats)
    refused = sum(s["rate_limited"] for s in stats)
    per_minute = ok / wall * 60 if wall else 0.0
    run_wall = diagnosis.get("run_wall_s")
    if run_wall:  # the share over the run itself (a Ray node's start-up is not the route's)
        diagnosis["share_of_combined_in_run_pct"] = round(100 * ok / run_wall * 60 / sum(limits), 1)
    return {
        "chains": args.chains,
        "rpm": limits,
        "wall_s": round(wall, 1),
        "ok_per_min": round(per_minute, 1),
        "share_of_combined_pct": round(100 * per_minute / sum(limits), 1),
        "rate_limited_pct": round(100 * refused / calls, 2) if calls else 0.0,
        "servers": [{k: s[k] for k in ("calls", "ok", "rate_limited")} for s in stats],
        "items_succeeded": items_ok,
        **diagnosis,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async def run(urls: list[str]) -> tuple[int, dict[str, Any]]:
        items = [f"topic {i}" for i in range(args.chains)]
        chain = pipeline(urls, args.policy)
        extra: dict[str, Any] = {}
        if args.backend == "ray":
            extra = {"backend": "ray", "workers": args.workers}
        report = await arun(chain, items, concurrency=args.concurrency, check_input=False, **extra)
        moves = (report.routes or {}).get("pair", {}).get("moves")
        # the run's own wall (first admission to last result): without a Ray node's start-up
        return report.items_succeeded, {"run_wall_s": round(report.wall_seconds, 1), "moves": moves}

    tool = "chainfleet" + (f" ray x{args.workers}" if args.backend == "ray" else "")
    return {"tool": tool, "policy": args.policy, **await serve(args, run)}


async def measure_litellm(args: argparse.Namespace) -> list[dict[str, Any]]:
    """LiteLLM's Router over the same two targets, each variant on fresh servers."""
    from peers import litellm_router

    results = []
    rpms = (args.rpm, args.rpm_second or args.rpm)
    tool = f"litellm {litellm_router.version()}"
    for label, rpm_set, strategy in litellm_router.VARIANTS:

        def run(urls: list[str], rpm_set: bool = rpm_set, strategy: str = strategy) -> Any:
            targets = [(f"{url}/v1", key) for url, key in zip(urls, KEYS, strict=True)]
            return litellm_router.run_router(
                targets, rpms, args.chains, args.concurrency, rpm_set=rpm_set, strategy=strategy
            )

        print(f"running LiteLLM Router: {label} ...", file=sys.stderr, flush=True)
        results.append({"tool": tool, "policy": label, **await serve(args, run)})
    return results


def print_table(results: list[dict[str, Any]]) -> None:
    head = f"{'wall s':>7} {'items':>9} {'ok/min':>7} {'% of sum':>8} {'429 %':>6}"
    print(f"{'tool':<16} {'setting':<34} {head}")
    for r in results:
        items = f"{r['items_succeeded']}/{r['chains']}"
        print(
            f"{r['tool']:<16} {r['policy']:<34} {r['wall_s']:>7.1f} {items:>9} {r['ok_per_min']:>7.1f} "
            f"{r['share_of_combined_pct']:>8.1f} {r['rate_limited_pct']:>6.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chains", type=int, default=300)
    parser.add_argument("--rpm", type=int, default=600)
    parser.add_argument("--rpm-second", type=int, default=None, help="the second target rpm (default: --rpm)")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", "-c", type=int, default=50)
    parser.add_argument("--policy", choices=("spill", "split", "fallback"), default="spill")
    parser.add_argument("--backend", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (with --backend ray)")
    parser.add_argument("--peer", choices=("litellm",), action="append", help="run this peer too (issue 23)")
    args = parser.parse_args(argv)
    results = [asyncio.run(measure(args))]
    if "litellm" in (args.peer or []):
        from peers import litellm_router

        why = litellm_router.missing()
        if why:
            print(f"skipped LiteLLM's Router: {why}", file=sys.stderr)
        else:
            results += asyncio.run(measure_litellm(args))
    if len(results) == 1:
        print(json.dumps(results[0], indent=2))
        return 0
    print(json.dumps(results, indent=2))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
