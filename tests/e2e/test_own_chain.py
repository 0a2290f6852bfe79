"""Bring your own chain, the Python door, as its users meet it: an async function of one item
whose calls go through chainfleet (limits, retries, journal, stats) to the sim-server over real
HTTP, run by ``chainfleet.run`` over many items.

Every test starts a sim-server on 127.0.0.1 (its own thread) and reads what it counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import chainfleet
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-sim-own-chain-0123456789"
MODEL = "gpt-4o-mini"
TOPICS = ["tea", "coffee", "cocoa"]


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy and no real endpoint or key from the environment can come into play."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sim() -> Any:
    with SimServerThread(SimServerSettings(api_keys=(KEY,))) as server:
        yield server


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_an_openai_chain_runs_over_every_item(sim: Any, tmp_path: Path) -> None:
    """Two calls per item through ``fleet.openai()``, labelled by stage: every item's output is
    its last reply, every call reached the server once, and the report counts them by stage."""

    async def article(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        with fleet.stage("research"):
            notes = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Research {topic}."}]
            )
        with fleet.stage("write"):
            draft = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"Write on {topic} from: {notes.choices[0].message.content}"}],
            )
        return draft.choices[0].message.content or ""

    out = tmp_path / "out"
    report = chainfleet.run(article, TOPICS, concurrency=3, out=out)
    assert report.items_succeeded == 3
    rows = results(out)
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    assert all(row["outputs"]["article"] for row in rows)
    stats = sim.stats()
    assert stats["ok"] == 6
    assert all(count == 1 for count in stats["completed_by_key"].values())
    data = json.loads((out / "report.json").read_text())
    assert data["calls"]["total"] == 6
