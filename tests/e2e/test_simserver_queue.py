"""The sim server's queueing mode (``slots``) on a port: N served at once, the rest wait inside
the server; ``max_in_flight`` caps queued plus served, and the slots change live."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2 as httpx
import openai

from chainfleet.sim.server import SimServer
from chainfleet.sim.settings import SimServerSettings

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Research tea."}], "max_tokens": 20}


def serve(body: Any, **settings: Any) -> Any:
    async def main() -> Any:
        async with SimServer(SimServerSettings(**settings)) as sim:
            return await body(sim)

    return asyncio.run(main())


def test_requests_beyond_the_slots_wait_in_line_and_all_succeed_over_the_sdk() -> None:
    async def scenario(sim: SimServer) -> dict[str, Any]:
        client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="sim", max_retries=0, timeout=20)
        try:
            replies = await asyncio.gather(
                *(client.chat.completions.create(**BODY) for _ in range(6))  # type: ignore[call-overload]
            )
        finally:
            await client.close()
        assert all(reply.choices[0].message.content for reply in replies)
        return sim.stats()

    stats = serve(scenario, slots=2, latency=0.1)
    queue = stats["queue"]
    assert stats["ok"] == 6 and stats["status"] == {"200": 6}
    assert queue["slots"] == 2 and queue["peak_busy"] == 2
    assert queue["served"] == 6 and queue["queued_total"] == 4 and queue["peak_queued"] == 4
    assert queue["busy"] == 0 and queue["queued"] == 0
    assert stats["max_in_flight"] == 6  # queued requests are in flight as the client sees it


def test_max_in_flight_caps_queued_plus_served() -> None:
    async def scenario(sim: SimServer) -> list[int]:
        async with httpx.AsyncClient(base_url=sim.url, timeout=20) as http:
            headers = {"Authorization": "Bearer sim"}
            responses = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=BODY, headers=headers) for _ in range(3))
            )
        return sorted(r.status_code for r in responses)

    assert serve(scenario, slots=1, max_in_flight=2, latency=0.1) == [200, 200, 503]


def test_without_slots_nothing_queues() -> None:
    async def scenario(sim: SimServer) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=sim.url, timeout=20) as http:
            headers = {"Authorization": "Bearer sim"}
            await asyncio.gather(
                *(http.post("/v1/chat/completions", json=BODY, headers=headers) for _ in range(4))
            )
        return sim.stats()["queue"]

    queue = serve(scenario, latency=0.05)
    assert queue["slots"] is None and queue["queued_total"] == 0 and queue["peak_busy"] == 4


def test_config_changes_the_slots_live() -> None:
    async def scenario(sim: SimServer) -> Any:
        async with httpx.AsyncClient(base_url=sim.url, timeout=20) as http:
            answer = await http.post("/sim/config", json={"slots": 3})
            bad = await http.post("/sim/config", json={"slots": 0})
            return answer.json()["slots"], bad.status_code, sim.stats()["queue"]["slots"]

    assert serve(scenario) == (3, 422, 3)
