"""What chainfleet's provider path costs over the bare official SDK, against the same server.

Starts ``chainfleet sim-server`` (zero latency, no limits) in its own process, then for the
OpenAI and the Anthropic SDK makes the same N calls at the same concurrency two ways, in one run:

- bare: the SDK's async client (``max_retries=0``), ``asyncio.gather`` + ``Semaphore``;
- chainfleet: a one-stage pipeline on ``openai:`` / ``anthropic:`` through the runner (limiter,
  retry wrapper, run store, report), the same prompts.

Prints calls/s for each and the ratio. With a zero-latency server both sides are bound by the
client's CPU, so the ratio is the share of throughput chainfleet keeps; against a real model
(hundreds of ms a call) the difference disappears into the latency.

Run:  python benchmarks/adapter_overhead.py [--calls 2000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import openai

from chainfleet import Pipeline, arun

KEY = "sim-bench"


def start_server() -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).parent / "chainfleet"
    proc = subprocess.Popen([str(exe), "sim-server", "--port", "0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    if not match:
        proc.kill()
        raise SystemExit(f"sim-server did not start: {line!r}")
    return proc, match.group(0)


async def bare_openai(url: str, prompts: list[str], concurrency: int) -> float:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> str:
        async with sem:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-sim", messages=[{"role": "user", "content": prompt}], max_tokens=200
            )
            parsed = raw.parse()
            return str(parsed.choices[0].message.content)

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    elapsed = time.perf_counter() - started
    await client.close()
    return len(prompts) / elapsed


async def bare_anthropic(url: str, prompts: list[str], concurrency: int) -> float:
    client = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> str:
        async with sem:
            raw = await client.messages.with_raw_response.create(
                model="claude-sim", max_tokens=200, messages=[{"role": "user", "content": prompt}]
            )
            parsed = await raw.parse()
            return str(parsed.content[0].text)  # type: ignore[union-attr]

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    elapsed = time.perf_counter() - started
    await client.close()
    return len(prompts) / elapsed


async def through_chainfleet(model: str, topics: list[str], concurrency: int) -> float:
    pipeline = Pipeline.from_dict(
        {
            "model": model,
            "input": "topic",
            "stages": [{"name": "research", "prompt": "Research {{ topic }}.", "max_tokens": 200}],
        }
    )
    started = time.perf_counter()
    report = await arun(pipeline, topics, concurrency=concurrency, check_input=False)
    elapsed = time.perf_counter() - started
    assert report.items_succeeded == len(topics), report.summary_lines()
    return len(topics) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    proc, url = start_server()
    os.environ.update(
        OPENAI_BASE_URL=f"{url}/v1", OPENAI_API_KEY=KEY, ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY=KEY
    )
    try:
        topics = [f"topic {i}" for i in range(args.calls)]
        prompts = [f"Research {t}." for t in topics]
        print(f"machine: {platform.platform()}, Python {sys.version.split()[0]}")
        print(
            f"{args.calls} calls at concurrency {args.concurrency}, "
            "sim-server in its own process, zero latency"
        )
        print(f"{'SDK':<10} {'bare SDK':>12} {'chainfleet':>12} {'ratio':>7}")
        for name, bare, model in (
            ("openai", bare_openai, "openai:gpt-sim"),
            ("anthropic", bare_anthropic, "anthropic:claude-sim"),
        ):
            asyncio.run(bare(url, prompts[:50], args.concurrency))  # warm up connections and imports
            bare_rate = asyncio.run(bare(url, prompts, args.concurrency))
            ours = asyncio.run(through_chainfleet(model, topics, args.concurrency))
            print(f"{name:<10} {bare_rate:>10,.0f}/s {ours:>10,.0f}/s {ours / bare_rate:>7.2f}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
