"""Streams through the Python door pass through as they arrive, and a stream cut midway fails
its item (not retried under the caller, who already read part of it), which runs again whole.

The upstream here is a small OpenAI-like streaming server on 127.0.0.1 written for the test
(aiohttp), in the same event loop as the run, so it can hold its second chunk back until the
chain has read the first: a gateway that waited for the whole stream would never get it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

import chainfleet

KEY = "sk-sim-own-streams-0123456789"


def chunk(content: str | None, *, usage: bool = False) -> bytes:
    event: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": []
        if content is None
        else [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    if usage:
        event["usage"] = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    return f"data: {json.dumps(event)}\n\n".encode()


class Upstream:
    """Answers every chat completion with a stream of two words; see the module docstring."""

    def __init__(self, *, cut_first: bool = False) -> None:
        self.release = asyncio.Event()
        self.requests = 0
        self.cut_first = cut_first
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk("Hello"))
        if self.cut_first and self.requests == 1:
            assert request.transport is not None
            request.transport.close()  # the connection drops midway
            return response
        await self.release.wait()
        await response.write(chunk(" world"))
        await response.write(chunk(None, usage=True))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def __aenter__(self) -> Upstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def streaming_chain(upstream: Upstream, seen: list[str]) -> Any:
    async def stream(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=upstream.url, api_key=KEY)
        events = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": topic}], stream=True
        )
        text = ""
        async for event in events:
            if event.choices:
                text += event.choices[0].delta.content or ""
                seen.append(text)
                upstream.release.set()  # the first word is here: the server may send the rest
        return text

    return stream


def test_a_stream_reaches_the_chain_as_it_arrives(tmp_path: Path) -> None:
    seen: list[str] = []

    async def main() -> Any:
        async with Upstream() as upstream:
            run = chainfleet.arun(streaming_chain(upstream, seen), ["tea"], out=tmp_path / "out")
            return await asyncio.wait_for(run, 60)  # a buffering gateway would wait forever

    report = asyncio.run(main())
    assert report.items_succeeded == 1
    assert seen == ["Hello", "Hello world"]
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["tokens"] == {"input": 7, "output": 2, "cached": 0}  # from the stream's usage


def test_a_stream_cut_midway_fails_its_item_which_runs_again(tmp_path: Path) -> None:
    seen: list[str] = []

    async def main() -> tuple[Any, int]:
        async with Upstream(cut_first=True) as upstream:
            run = chainfleet.arun(streaming_chain(upstream, seen), ["tea"], out=tmp_path / "out")
            return await asyncio.wait_for(run, 60), upstream.requests

    report, requests = asyncio.run(main())
    assert report.items_succeeded == 1  # in the retry pass
    assert requests == 2  # the cut stream was not retried under the chain that read part of it
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert rows[0]["outputs"]["stream"] == "Hello world"
