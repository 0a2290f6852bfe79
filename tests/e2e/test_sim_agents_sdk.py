"""The OpenAI Agents SDK, unchanged, against the sim-server's Responses API.

An ``agents.Agent`` with a ``function_tool`` is run by ``Runner.run`` (and ``Runner.run_streamed``)
over ``POST /v1/responses`` on 127.0.0.1, tracing off: the simulated model calls the tool, the
SDK runs it and sends the result back, and the final output uses what the tool returned.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

if importlib.util.find_spec("agents") is None:
    if os.environ.get("CI"):
        pytest.fail("CI: the OpenAI Agents SDK is not installed (pip install -e '.[dev]')", pytrace=False)
    pytest.skip("the OpenAI Agents SDK is not installed (pip install openai-agents)", allow_module_level=True)

import agents  # noqa: E402 - after the check above

KEY = "sk-sim-test-key-0123456789"
MODEL = "gpt-4o-mini"
PROMPT = "Research urban beekeeping. [[sim:tool_turns=1]]"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_AGENTS_DISABLE_TRACING"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,))) as server:
        yield server


def run_agent(
    sim: SimServerThread, *, streamed: bool = False, fail: bool = False
) -> tuple[Any, list[dict[str, Any]]]:
    """Run a research agent with a ``search`` tool; return its result and the tool's calls."""
    seen: list[dict[str, Any]] = []

    @agents.function_tool
    def search(query: str, limit: int = 3) -> str:
        """Search the offline corpus.

        Args:
            query: what to look for.
            limit: how many passages to return.
        """
        seen.append({"query": query, "limit": limit})
        if fail:
            raise RuntimeError("the corpus is offline")
        return f"Passage 7: rooftop hives in Paris produce {40 + len(seen)} kg of honey a year."

    async def main() -> Any:
        client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key=KEY, max_retries=0, timeout=10)
        agents.set_default_openai_client(client, use_for_tracing=False)
        agents.set_default_openai_api("responses")
        agents.set_tracing_disabled(True)
        agent = agents.Agent(
            name="Researcher", instructions="You research topics.", model=MODEL, tools=[search]
        )
        try:
            if not streamed:
                return await agents.Runner.run(agent, PROMPT)
            result = agents.Runner.run_streamed(agent, PROMPT)
            async for _ in result.stream_events():
                pass
            return result
        finally:
            await client.close()

    return asyncio.run(main()), seen


def test_an_agent_with_a_function_tool_runs_on_the_sim_server(sim: SimServerThread) -> None:
    result, seen = run_agent(sim)

    assert seen and all(isinstance(call["query"], str) and call["query"] for call in seen)
    assert "search said:" in result.final_output
    assert "rooftop hives in Paris produce" in result.final_output
    stats = sim.stats()
    assert stats["tool_calls"] == len(seen)
    assert stats["ok"] == 2  # one turn with tool calls, one answer
    usage = result.context_wrapper.usage
    assert usage.requests == 2 and usage.output_tokens == stats["tokens"]["output"]


def test_the_same_agent_run_again_makes_the_same_calls(sim: SimServerThread) -> None:
    first, seen = run_agent(sim)
    again, seen_again = run_agent(sim)
    assert seen == seen_again and first.final_output == again.final_output


def test_a_failing_tool_shows_in_the_final_output(sim: SimServerThread) -> None:
    result, seen = run_agent(sim, fail=True)
    assert seen
    assert "search failed: An error occurred while running the tool" in result.final_output
    assert "rooftop hives" not in result.final_output


def test_the_agent_runs_streamed_too(sim: SimServerThread) -> None:
    plain, seen = run_agent(sim)
    streamed, seen_streamed = run_agent(sim, streamed=True)
    assert seen_streamed == seen and streamed.final_output == plain.final_output
    assert sim.stats()["streamed"] == 2
