"""What the template sandbox costs: the content pipeline's three prompts rendered N times in
Jinja2's SandboxedEnvironment (the default) and in a plain Environment (``sandbox: false``),
interleaved in one process, and the same against a whole run's per-call overhead on ``sim``.

Run:  python benchmarks/sandbox_cost.py [--renders 20000] [--items 2000]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from chainfleet import Pipeline, run

STAGES = [
    {"name": "research", "prompt": "Research {{ topic }}: the key facts, figures and open questions."},
    {"name": "write", "prompt": "Write an article on {{ topic }} from these notes:\n{{ research }}"},
    {"name": "edit", "prompt": "Edit this draft for clarity and accuracy:\n{{ write }}"},
]


def pipeline(sandbox: bool) -> Pipeline:
    return Pipeline.model_validate(
        {"model": "sim", "sim": {"latency": 0}, "input": "topic", "sandbox": sandbox, "stages": STAGES}
    )


def render_seconds(p: Pipeline, renders: int) -> float:
    context = {"topic": "heat pumps", "research": "notes " * 200, "write": "draft " * 400, "id": "1"}
    started = time.perf_counter()
    for _ in range(renders):
        for stage in p.stages:
            stage.render(context)
    return time.perf_counter() - started


def run_seconds(p: Pipeline, items: int) -> float:
    started = time.perf_counter()
    run(p, [f"topic {i}" for i in range(items)], concurrency=50)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--renders", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores")
    sandboxed, plain = pipeline(True), pipeline(False)
    render: dict[str, list[float]] = {"sandboxed": [], "plain": []}
    whole: dict[str, list[float]] = {"sandboxed": [], "plain": []}
    for _ in range(3):  # interleaved rounds; the median is kept
        render["sandboxed"].append(render_seconds(sandboxed, args.renders))
        render["plain"].append(render_seconds(plain, args.renders))
        whole["sandboxed"].append(run_seconds(sandboxed, args.items))
        whole["plain"].append(run_seconds(plain, args.items))
    med = {k: sorted(v)[1] for k, v in render.items()}
    runs = {k: sorted(v)[1] for k, v in whole.items()}
    per = {k: v / (3 * args.renders) * 1e6 for k, v in med.items()}
    print(
        f"{3 * args.renders:,} renders: sandboxed {per['sandboxed']:.1f} us, plain {per['plain']:.1f} us "
        f"each (ratio {med['sandboxed'] / med['plain']:.2f})"
    )
    calls = 3 * args.items
    print(
        f"a {calls:,}-call run on sim (latency 0, -c 50): "
        f"sandboxed {calls / runs['sandboxed']:,.0f} calls/s, "
        f"plain {calls / runs['plain']:,.0f} calls/s (ratio {runs['plain'] / runs['sandboxed']:.3f})"
    )


if __name__ == "__main__":
    main()
