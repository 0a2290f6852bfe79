"""The Python door's CPU per call with the network taken out: a steadier figure than
``transport_overhead.py`` on a loaded machine.

Both sides get the same canned answer (one real chat completion of ``chainfleet sim-server``,
its status, headers and body, fetched once at the start) from an in-process httpx transport,
so no socket, no server and no other process is in the measurement, only this process's
Python: the openai SDK's, httpx's and, on the chainfleet side, the gateway's, the runner's,
the journal's and the store's.

- bare: ``openai.AsyncOpenAI(http_client=httpx.AsyncClient(transport=canned))``, gather +
  Semaphore at ``-c``;
- chainfleet: ``chainfleet.arun(research, topics, concurrency=c)`` where ``research`` calls
  ``fleet.openai()``, the gateway's upstream being the same canned transport.

Prints CPU ms per call (``time.process_time``) of each side, alternating, and the ratio
bare/chainfleet (the share of the bare SDK's throughput a CPU-bound client keeps).

Run:  python benchmarks/transport_cpu.py [--calls 2000] [--concurrency 50] [--rounds 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai

import chainfleet
from chainfleet.code.gateway import Gateway

sys.path.insert(0, str(Path(__file__).parent))
from transport_overhead import KEY, MODEL, start_server  # noqa: E402

URL = "http://canned.invalid/v1"


class Body(httpx.AsyncByteStream):
    def __init__(self, content: bytes) -> None:
        self.content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.content


class Canned(httpx.AsyncBaseTransport):
    """Answers every request with the one answer it was given (the request body read, as a
    server would)."""

    def __init__(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.status, self.headers, self.content = status, headers, content

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return httpx.Response(self.status, headers=self.headers, stream=Body(self.content))


def canned_answer() -> Canned:
    proc, url = start_server()
    try:
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Research topic 0."}],
                "max_tokens": 200,
            },
            headers={"authorization": f"Bearer {KEY}"},
        )
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
        return Canned(response.status_code, headers, response.content)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def bare(canned: Canned, topics: list[str], concurrency: int) -> float:
    client = openai.AsyncOpenAI(
        base_url=URL, api_key=KEY, max_retries=0, http_client=httpx.AsyncClient(transport=canned)
    )
    sem = asyncio.Semaphore(concurrency)

    async def one(topic: str) -> str:
        async with sem:
            reply = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Research {topic}."}], max_tokens=200
            )
            return str(reply.choices[0].message.content)

    cpu = time.process_time()
    await asyncio.gather(*(one(t) for t in topics))
    cpu = time.process_time() - cpu
    await client.close()
    return cpu * 1000 / len(topics)


async def through_chainfleet(topics: list[str], concurrency: int, out: Path | None) -> float:
    async def research(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=URL, api_key=KEY)
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Research {topic}."}], max_tokens=200
        )
        return str(reply.choices[0].message.content)

    options: dict[str, Any] = {"out": out, "force": True} if out is not None else {}
    cpu = time.process_time()
    report = await chainfleet.arun(research, topics, concurrency=concurrency, check_input=False, **options)
    cpu = time.process_time() - cpu
    assert report.items_succeeded == len(topics), report.summary_lines()
    return cpu * 1000 / len(topics)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", choices=("bare", "chainfleet"), default=None)
    args = parser.parse_args()
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        os.environ.pop(name, None)
    canned = canned_answer()
    Gateway.upstream = property(lambda self: canned)  # type: ignore[assignment,method-assign]
    topics = [f"topic {i}" for i in range(args.calls)]
    where = f"run store in {args.out}" if args.out else "temporary run store"
    print(f"{args.calls} calls at -c {args.concurrency}, canned in-process answer, {where}")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    asyncio.run(bare(canned, topics[:100], args.concurrency))  # warm up imports on both sides
    asyncio.run(through_chainfleet(topics[:100], args.concurrency, None))
    print(f"{'round':>5} {'bare ms/call':>13} {'chainfleet':>11} {'ratio':>6}")
    ratios, sides = [], ([], [])
    for number in range(1, args.rounds + 1):
        b = asyncio.run(bare(canned, topics, args.concurrency)) if args.only != "chainfleet" else float("nan")
        if args.out is not None:
            shutil.rmtree(args.out, ignore_errors=True)
        c = (
            asyncio.run(through_chainfleet(topics, args.concurrency, args.out))
            if args.only != "bare"
            else float("nan")
        )
        ratios.append(b / c)
        sides[0].append(b)
        sides[1].append(c)
        print(f"{number:>5} {b:>13.3f} {c:>11.3f} {b / c:>6.2f}", flush=True)
    bare_ms, ours_ms = statistics.median(sides[0]), statistics.median(sides[1])
    print(
        f"median: bare {bare_ms:.3f} ms/call, chainfleet {ours_ms:.3f}, ratio {statistics.median(ratios):.2f}"
    )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
