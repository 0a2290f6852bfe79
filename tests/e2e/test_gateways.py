"""A LiteLLM-like gateway, a real aiohttp server on a loopback port, spoken to by the official
openai SDK through chainfleet's adapter as a real proxy would be: its wait is read and an
unknown model stops the run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from chainfleet import Pipeline, RateLimited, arun
from chainfleet.providers import CompletionRequest
from chainfleet.providers.openai import OpenAIProvider


def litellm_like(calls: list[str]) -> web.Application:
    """A gateway answering as LiteLLM's proxy does: a 429 whose only wait is
    ``llm_provider-retry-after``, and a 400 "Invalid model name" for a model it does not route."""

    async def chat(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        calls.append(body["model"])
        if body["model"] == "busy":
            return web.json_response(
                {"error": {"message": "rate limited upstream", "type": "rate_limit_error", "code": "429"}},
                status=429,
                headers={"llm_provider-retry-after": "2"},
            )
        message = (
            f"Invalid model name passed in model={body['model']}. Call `/v1/models` to view available models"
        )
        return web.json_response(
            {"error": {"message": message, "type": "invalid_request_error", "code": "400"}}, status=400
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def with_gateway(calls: list[str], body: Any) -> Any:
    runner = web.AppRunner(litellm_like(calls))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await body(f"http://127.0.0.1:{port}/v1")
    finally:
        await runner.cleanup()


def test_through_a_litellm_gateway_the_wait_is_read_and_an_unknown_model_stops_the_run(
    tmp_path: Path,
) -> None:
    calls: list[str] = []

    async def body(url: str) -> tuple[float | None, int]:
        provider = OpenAIProvider(api_key="sk-gateway-0123456789", base_url=url, timeout=10)
        try:
            await provider.complete(CompletionRequest(model="busy", prompt="hi", max_tokens=5))
        except RateLimited as exc:
            wait = exc.retry_after
        finally:
            await provider.aclose()
        pipeline = Pipeline.from_dict(
            {
                "name": "gw",
                "model": "gw:no-such-model",
                "providers": {"gw": {"kind": "openai", "base_url": url, "api_key_env": "GW_KEY"}},
                "input": "topic",
                "stages": [{"name": "one", "prompt": "About {{ topic }}", "max_tokens": 10}],
            }
        )
        report = await arun(pipeline, [f"t{i}" for i in range(40)], concurrency=2, out=tmp_path / "out")
        return wait, report.exit_code

    import os

    os.environ["GW_KEY"] = "sk-gateway-0123456789"
    try:
        wait, code = asyncio.run(with_gateway(calls, body))
    finally:
        del os.environ["GW_KEY"]
    assert wait == pytest.approx(2.0)
    assert code == 2  # the run stopped, as for a 404: not 40 items failing one by one
    assert calls.count("no-such-model") <= 4
