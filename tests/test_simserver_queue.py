"""The sim server's queueing mode (``slots``): N served at once, the rest wait inside the server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2 as httpx
import openai

from chainfleet.sim.queue import SlotQueue
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


def _start(queue: SlotQueue, name: str, order: list[str], release: asyncio.Event) -> asyncio.Task[None]:
    async def hold() -> None:
        async with queue.slot():
            order.append(name)
            await release.wait()

    return asyncio.ensure_future(hold())


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_slots_are_granted_first_come_first_served() -> None:
    async def main() -> list[str]:
        now = [0.0]
        queue = SlotQueue(1, clock=lambda: now[0])
        order: list[str] = []
        gates = {name: asyncio.Event() for name in "abc"}
        tasks = [_start(queue, name, order, gates[name]) for name in "abc"]
        await _settle()
        assert order == ["a"] and queue.stats()["queued"] == 2
        now[0] = 2.0
        gates["a"].set()
        await _settle()
        assert order == ["a", "b"]
        gates["b"].set()
        gates["c"].set()
        await asyncio.gather(*tasks)
        assert queue.stats()["wait_seconds"] == 4.0  # b and c each waited 2 s on the clock
        return order

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_a_cancelled_waiter_leaves_the_line_and_resize_lets_waiters_in() -> None:
    async def main() -> None:
        queue = SlotQueue(1, clock=time.monotonic)
        order: list[str] = []
        gate = asyncio.Event()
        tasks = {name: _start(queue, name, order, gate) for name in "abc"}
        await _settle()
        tasks["b"].cancel()
        await _settle()
        assert queue.stats()["queued"] == 1
        queue.resize(2)
        await _settle()
        assert order == ["a", "c"] and queue.stats()["busy"] == 2
        gate.set()
        await asyncio.gather(tasks["a"], tasks["c"])
        assert tasks["b"].cancelled() and queue.stats()["busy"] == 0

    asyncio.run(main())


def test_the_command_takes_slots_and_refuses_zero() -> None:
    from click.testing import CliRunner

    import chainfleet.cli.simserver  # noqa: F401 - registers the command
    from chainfleet.cli import cli

    result = CliRunner().invoke(cli, ["sim-server", "--slots", "0"])
    assert result.exit_code == 2 and "--slots" in result.stderr
    assert "--slots N" in CliRunner().invoke(cli, ["sim-server", "--help"]).output
