"""The sim-server's admin routes refuse what any web page could send (cross-origin, or a
``text/plain`` body that needs no CORS preflight); scripts and the project's tools still work."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2 as httpx

from chainfleet.sim.server import SimServer
from chainfleet.sim.settings import SimServerSettings


def scenario() -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with SimServer(SimServerSettings()) as sim:
            async with httpx.AsyncClient(base_url=sim.url, trust_env=False, timeout=10) as http:
                page = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
                seen = {
                    "plain": await http.post("/sim/config", content='{"error_rate": 1}', headers=page),
                    "plain_no_origin": await http.post(
                        "/sim/config", content='{"error_rate": 1}', headers={"Content-Type": "text/plain"}
                    ),
                    "json_from_page": await http.post(
                        "/sim/config", json={"error_rate": 1}, headers={"Origin": "https://evil.example"}
                    ),
                    "reset_from_page": await http.post("/sim/reset", headers={"Origin": "null"}),
                    "after": sim.settings.error_rate,
                    "script": await http.post("/sim/config", json={"latency": 0.25}),
                    "local_page": await http.post(
                        "/sim/config", json={"jitter": 0.5}, headers={"Origin": "http://127.0.0.1:8000"}
                    ),
                }
                seen["now"] = (sim.settings.latency, sim.settings.jitter)
                return seen

    return asyncio.run(main())


def test_a_web_page_cannot_change_the_sim_server_but_a_script_can() -> None:
    seen = scenario()
    assert seen["plain"].status_code == 403
    assert seen["plain_no_origin"].status_code == 415
    assert "application/json" in seen["plain_no_origin"].json()["error"]["message"]
    assert seen["json_from_page"].status_code == 403 and seen["reset_from_page"].status_code == 403
    assert seen["after"] == 0.0  # nothing changed
    assert seen["script"].status_code == 200 and seen["local_page"].status_code == 200
    assert seen["now"] == (0.25, 0.5)


def test_a_web_page_cannot_change_or_reset_the_batch_jobs_either() -> None:
    """The batch endpoints' admin routes were missing from the guard: any page could set
    ``fail_rate`` to 1.0 with a ``text/plain`` body."""

    async def main() -> dict[str, Any]:
        async with SimServer(SimServerSettings()) as sim:
            async with httpx.AsyncClient(base_url=sim.url, trust_env=False, timeout=10) as http:
                page = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
                return {
                    "plain": await http.post("/sim/batch/config", content='{"fail_rate": 1.0}', headers=page),
                    "reset": await http.post("/sim/batch/reset", headers={"Origin": "http://evil.example"}),
                    "after": sim.batch.settings.fail_rate,
                    "script": await http.post("/sim/batch/config", json={"fail_rate": 0.5}),
                    "now": sim.batch.settings.fail_rate,
                }

    seen = asyncio.run(main())
    assert seen["plain"].status_code == 403 and seen["reset"].status_code == 403
    assert seen["after"] == 0.0  # nothing changed
    assert seen["script"].status_code == 200 and seen["now"] == 0.5
