"""Real clients through the Python door: each chain builds the client its author already uses,
pointed at the sim-server on 127.0.0.1, with chainfleet's HTTP client (``fleet.openai()``,
``fleet.anthropic()`` or ``chainfleet.http_client()``); ``chainfleet.run`` runs it over three
items. Every call is counted by chainfleet (report.json) and reached the server exactly once;
a second run of an item (the retry pass) replays it from the journal, streams included.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import chainfleet
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-sim-own-clients-0123456789"
MODEL = "gpt-4o-mini"
CLAUDE = "claude-sim-test"
TOPICS = ["tea", "coffee", "cocoa"]


def need(module: str) -> None:
    """Skip when an optional client is missing, except on CI, where it must be there."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI: {module} is not installed (pip install -e '.[dev]')", pytrace=False)
        pytest.skip(f"{module} is not installed")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sim() -> Any:
    with SimServerThread(SimServerSettings(api_keys=(KEY,))) as server:
        yield server


def once_more(chain: Any) -> Any:
    """``chain``, raising after its work the first time each item runs: the retry pass runs
    every item again, and all its calls must come from the journal."""
    done: set[str] = set()

    async def again(topic: str, fleet: chainfleet.Fleet) -> Any:
        value = await chain(topic, fleet)
        if topic not in done:
            done.add(topic)
            raise RuntimeError("once more")
        return value

    again.__name__ = chain.__name__
    return again


def check_run(sim: Any, chain: Any, out: Path, *, calls_per_item: int) -> list[Any]:
    """Run ``chain`` (each item twice: see :func:`once_more`); check the counts; the outputs."""
    report = chainfleet.run(once_more(chain), TOPICS, concurrency=3, out=out)
    assert report.items_succeeded == 3, report.failures
    calls = 3 * calls_per_item
    stats = sim.stats()
    assert stats["ok"] == calls
    assert all(count == 1 for count in stats["completed_by_key"].values())
    data = json.loads((out / "report.json").read_text())
    assert data["calls"]["total"] == calls and data["replayed_calls"] == calls
    assert data["tokens"]["output"] > 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [row["outputs"][chain.__name__] for row in rows]


def test_the_anthropic_sdk(sim: Any, tmp_path: Path) -> None:
    async def claude(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.anthropic(base_url=sim.url, api_key=KEY)
        reply = await client.messages.create(
            model=CLAUDE, max_tokens=200, messages=[{"role": "user", "content": f"Research {topic}."}]
        )
        return str(reply.content[0].text)

    outputs = check_run(sim, claude, tmp_path / "out", calls_per_item=1)
    assert all(outputs)
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(data["stages"]) == [CLAUDE]  # unlabelled: the stage is the model


def test_openai_and_anthropic_streams_are_replayed_as_the_same_stream(sim: Any, tmp_path: Path) -> None:
    async def streams(topic: str, fleet: chainfleet.Fleet) -> list[str]:
        openai_client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        texts = []
        with fleet.stage("openai"):
            stream = await openai_client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"Research {topic}."}],
                stream=True,
                stream_options={"include_usage": True},
            )
            texts.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
        with fleet.stage("anthropic"):
            claude = fleet.anthropic(base_url=sim.url, api_key=KEY)
            async with claude.messages.stream(
                model=CLAUDE, max_tokens=200, messages=[{"role": "user", "content": f"Write on {topic}."}]
            ) as events:
                texts.append(await events.get_final_text())
        return texts

    outputs = check_run(sim, streams, tmp_path / "out", calls_per_item=2)
    assert all(a and b for a, b in outputs)


def test_langchain_chat_openai(sim: Any, tmp_path: Path) -> None:
    need("langchain_openai")
    from langchain_openai import ChatOpenAI

    async def langchain(topic: str, fleet: chainfleet.Fleet) -> str:
        llm = ChatOpenAI(
            model=MODEL,
            base_url=f"{sim.url}/v1",
            api_key=KEY,
            max_retries=0,
            http_async_client=chainfleet.http_client(),
        )
        with fleet.stage("research"):
            notes = await llm.ainvoke(f"Research {topic}.")
        with fleet.stage("write"):
            article = await llm.ainvoke(f"Write on {topic} from: {str(notes.content)[:200]}")
        return str(article.content)

    outputs = check_run(sim, langchain, tmp_path / "out", calls_per_item=2)
    assert all(outputs)


def test_the_openai_agents_sdk_with_a_function_tool(sim: Any, tmp_path: Path) -> None:
    need("agents")
    import agents

    agents.set_tracing_disabled(True)
    searched: list[str] = []

    @agents.function_tool
    def search(query: str) -> str:
        """Search the offline corpus.

        Args:
            query: what to look for.
        """
        searched.append(query)
        return "Passage 7: rooftop hives in Paris produce 40 kg of honey a year."

    async def agent(topic: str, fleet: chainfleet.Fleet) -> str:
        model = agents.OpenAIResponsesModel(
            model=MODEL, openai_client=fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        )
        researcher = agents.Agent(
            name="Researcher", instructions="You research.", model=model, tools=[search]
        )
        result = await agents.Runner.run(researcher, f"Research {topic}. [[sim:tool_turns=1]]")
        return str(result.final_output)

    outputs = check_run(sim, agent, tmp_path / "out", calls_per_item=2)  # tool call, then the answer
    assert all(outputs)
    # the tool is the user's code: it runs again in the item's second run, with the same
    # arguments the replayed model calls asked for (a fleet.step would not run again)
    assert searched and all(count % 2 == 0 for count in Counter(searched).values())


def test_pydantic_ai(sim: Any, tmp_path: Path) -> None:
    need("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    async def pydantic(topic: str, fleet: chainfleet.Fleet) -> str:
        provider = OpenAIProvider(base_url=f"{sim.url}/v1", api_key=KEY, http_client=chainfleet.http_client())
        writer = Agent(OpenAIChatModel(MODEL, provider=provider), instructions="You write.")
        result = await writer.run(f"Write on {topic}.")
        return str(result.output)

    outputs = check_run(sim, pydantic, tmp_path / "out", calls_per_item=1)
    assert all(outputs)
