"""Limits held through the Python door's transport, as for YAML stages: the sim-server in
strict mode (sliding windows of a second and a minute) refuses anything over its limit, and a
code chain at -c 20 keeps under it, told the limit (``rpm=``) or learning it from the headers.

Measured on this server (the same for a YAML pipeline of two stages): 1-3 refusals, all in the
first seconds, and a held pace of 92-96% of the limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import chainfleet
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-sim-own-limits-0123456789"
MODEL = "gpt-4o-mini"
RPM = 1200


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,), rpm=RPM, window=1.0, latency=0.05)) as server:
        yield server


def chain(sim: SimServerThread) -> Any:
    async def article(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        text = ""
        for stage in ("research", "write"):
            with fleet.stage(stage):
                reply = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"{stage}: {topic}"}], max_tokens=50
                )
            text = reply.choices[0].message.content or ""
        return text

    return article


@pytest.mark.parametrize("told", [True, False], ids=["told", "learned"])
def test_the_transport_keeps_to_the_limit(sim: SimServerThread, tmp_path: Path, told: bool) -> None:
    topics = [f"topic {i}" for i in range(200)]
    out = tmp_path / "out"
    options = {"rpm": RPM} if told else {}
    report = chainfleet.run(chain(sim), topics, concurrency=20, out=out, **options)
    assert report.items_succeeded == 200
    stats = sim.stats()
    assert stats["ok"] == 400
    assert stats["status"].get("429", 0) <= 0.01 * stats["calls"]  # at most 1% refused
    facts = json.loads((out / "report.json").read_text())["rates"]["models"][f"openai:{MODEL}"]
    # the pace it kept: the limit, less what the key-sharing guard gave back after the few
    # refusals a strict 1-second window gives (a YAML pipeline on this server holds the same)
    assert facts["held"]["rpm"] >= 0.9 * RPM
    if not told:
        assert facts["server"]["rpm"] == RPM and facts["learned_from"]
