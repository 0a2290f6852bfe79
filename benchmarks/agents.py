"""Agents at batch scale (issue 21): time against the ideal, and what a tool call costs.

Part 1, time: 300 items, each an agent of 3 tool turns then an answer (4 model turns), on
``sim`` at a scaled latency (a model turn ``--latency`` s, 40 ms by default), with one tool that
sleeps a known time (``--tool`` s, 20 ms). The sim calls one or two tools a turn; they run side
by side (``parallel_tools`` 4), so a tool turn costs one tool time. The ideal counts every turn
and tool call: an item takes 4 x latency + 3 x tool, and N items at concurrency C take
ceil(N / C) such chains (all chains are alike, so they go in waves). Measured at -c 1 and -c 25;
target: within 5% of the ideal. Beside it, a bare loop (``asyncio.gather`` + ``Semaphore``) over
the same sim turns and the same tool sleeps, in the same process: the machine's own floor. The
process CPU seconds of each are printed too: on a loaded machine a run whose CPU is a large
share of the ideal time cannot keep to it, whatever the runner does.

Part 2, tool-call CPU: a scripted model (in process, no latency) asks for K tool calls a turn,
3 turns an item, then answers. Two runs differ only in K (1 and 5): the extra process CPU over
the extra tool calls is what chainfleet spends per tool call (schema check, limits, the thread a
sync function runs in, storing the result durably, the report's share), set against calling the
function directly. Run for a sync and an async tool.

Run:  python benchmarks/agents.py [--items 300] [--latency 0.04] [--tool 0.02] [--quick]
      [--overhead-only]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import sys
import time
import timeit
from typing import Any

from chainfleet import Pipeline, arun
from chainfleet.pipeline import SimSettings
from chainfleet.providers import Completion, CompletionRequest, Provider, ToolCall
from chainfleet.providers.sim import SimProvider

TOOL_TURNS = 3
TOOL_SECONDS = 0.02


async def wait(query: str) -> str:
    """Look the query up (takes a known time)."""
    await asyncio.sleep(TOOL_SECONDS)
    return f"found {len(query)} passages"


def agent_pipeline(latency: float, tools: list[dict[str, Any]]) -> Pipeline:
    return Pipeline.from_dict(
        {
            "name": "agents",
            "model": "sim",
            "sim": {"latency": latency, "tool_turns": TOOL_TURNS},
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}.", "tools": tools, "max_tokens": 200}
            ],
        }
    )


async def bare_agents(topics: list[str], concurrency: int, latency: float) -> float:
    """The same agents by hand: sim turns and tool sleeps, gather + Semaphore, no store."""
    sim = SimProvider(SimSettings(latency=latency, tool_turns=TOOL_TURNS))
    tool = {
        "name": "wait",
        "description": "",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
    sem = asyncio.Semaphore(concurrency)

    async def agent(topic: str) -> str:
        async with sem:
            messages: list[dict[str, Any]] = [{"role": "user", "content": f"Research {topic}."}]
            while True:
                request = CompletionRequest(
                    model="sim", prompt="", messages=tuple(messages), tools=(tool,), max_tokens=200
                )
                reply = await sim.complete(request)
                if not reply.tool_calls:
                    return reply.text
                messages.append(
                    {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [c.to_dict() for c in reply.tool_calls],
                    }
                )
                results = await asyncio.gather(
                    *(wait(str(c.arguments.get("query", ""))) for c in reply.tool_calls)
                )
                messages += [
                    {"role": "tool", "tool_call_id": c.id, "content": r}
                    for c, r in zip(reply.tool_calls, results, strict=True)
                ]

    started = time.perf_counter()
    await asyncio.gather(*(agent(t) for t in topics))
    return time.perf_counter() - started


async def timing(items: int, latency: float, levels: list[int]) -> list[float]:
    pipe = agent_pipeline(latency, [{"function": wait}])
    topics = [f"topic number {i}" for i in range(1, items + 1)]
    chain = (TOOL_TURNS + 1) * latency + TOOL_TURNS * TOOL_SECONDS
    print(
        f"chain = {TOOL_TURNS + 1} turns x {latency * 1000:.0f} ms + {TOOL_TURNS} tool turns x "
        f"{TOOL_SECONDS * 1000:.0f} ms = {chain * 1000:.0f} ms"
    )
    print(
        f"{'items':>6} {'c':>4} {'chainfleet':>11} {'bare loop':>10} {'ideal':>8} {'ratio':>6} "
        f"{'bare ratio':>10} {'tool calls':>10} {'CPU s':>6} {'bare CPU s':>10}"
    )
    ratios = []
    for c in levels:
        cpu = time.process_time()
        report = await arun(pipe, topics, concurrency=c)
        cpu = time.process_time() - cpu
        assert report.items_succeeded == items, report.summary_lines()
        turns = report.agents["stages"]["research"]
        assert turns["turns_max"] == turns["turns_mean"] == TOOL_TURNS + 1, turns
        calls = report.agents["tools"]["wait"]["calls"]
        bare_cpu = time.process_time()
        bare = await bare_agents(topics, c, latency)
        bare_cpu = time.process_time() - bare_cpu
        ideal = math.ceil(items / c) * chain
        ratios.append(report.wall_seconds / ideal)
        print(
            f"{items:>6} {c:>4} {report.wall_seconds:>10.2f}s {bare:>9.2f}s {ideal:>7.2f}s "
            f"{report.wall_seconds / ideal:>6.3f} {bare / ideal:>10.3f} {calls:>10} "
            f"{cpu:>6.2f} {bare_cpu:>10.2f}"
        )
    return ratios


class Scripted(Provider):
    """A model that asks for ``per_turn`` tool calls a turn for 3 turns, then answers; no latency."""

    def __init__(self, per_turn: int, tool: str) -> None:
        self.per_turn = per_turn
        self.tool = tool

    async def complete(self, request: CompletionRequest) -> Completion:
        turn = sum(1 for m in request.conversation() if m["role"] == "assistant")
        if turn >= TOOL_TURNS:
            return Completion(text="done", input_tokens=1, output_tokens=1)
        calls = tuple(ToolCall(f"c{turn}_{k}", self.tool, {"x": k}) for k in range(self.per_turn))
        return Completion(text="", input_tokens=1, output_tokens=1, tool_calls=calls)


def noop(x: int) -> str:
    """Do nothing."""
    return "ok"


async def anoop(x: int) -> str:
    """Do nothing, asynchronously."""
    return "ok"


async def cpu_of_run(items: int, per_turn: int, tool: Any) -> tuple[float, int]:
    pipe = agent_pipeline(0.0, [{"function": tool}])
    topics = [f"t{i}" for i in range(items)]
    started = time.process_time()
    report = await arun(pipe, topics, concurrency=25, providers={"sim": Scripted(per_turn, tool.__name__)})
    cpu = time.process_time() - started
    assert report.items_succeeded == items, report.summary_lines()
    return cpu, report.agents["tools"][tool.__name__]["calls"]


async def overhead(items: int) -> None:
    print(
        f"\n{'tool':>6} {'calls (K=1)':>11} {'calls (K=5)':>11} {'CPU K=1':>8} {'CPU K=5':>8} "
        f"{'per call':>9} {'direct call':>11}"
    )
    for tool in (noop, anoop):
        await cpu_of_run(max(items // 10, 10), 1, tool)  # warm up imports and caches
        low, low_calls = await cpu_of_run(items, 1, tool)
        high, high_calls = await cpu_of_run(items, 5, tool)
        per_call = (high - low) / (high_calls - low_calls)
        if tool is noop:
            direct = min(timeit.repeat(lambda: noop(x=1), number=100_000, repeat=5)) / 100_000
        else:
            loop = asyncio.get_running_loop()
            started = loop.time()
            for _ in range(20_000):
                await anoop(x=1)
            direct = (loop.time() - started) / 20_000
        print(
            f"{tool.__name__:>6} {low_calls:>11} {high_calls:>11} {low:>7.2f}s {high:>7.2f}s "
            f"{per_call * 1e6:>7.0f}us {direct * 1e6:>9.2f}us"
        )


def main() -> None:
    global TOOL_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.04, help="seconds a model turn takes")
    parser.add_argument("--tool", type=float, default=0.02, help="seconds a tool call takes")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 25])
    parser.add_argument("--overhead-items", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="60 items")
    parser.add_argument("--overhead-only", action="store_true", help="part 2 only")
    args = parser.parse_args()
    TOOL_SECONDS = args.tool
    items = 60 if args.quick else args.items
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
        f"load {os.getloadavg()}"
    )
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}\n")
    if not args.overhead_only:
        ratios = asyncio.run(timing(items, args.latency, args.levels))
        worst = max(ratios)
        print(f"worst ratio to ideal: {worst:.3f} ({'within' if worst <= 1.05 else 'NOT within'} 5%)")
    asyncio.run(overhead(args.overhead_items))
    print(f"\nload after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
