"""Agent frameworks, unchanged, against the sim-server: pydantic-ai and LangChain's ChatOpenAI.

Both speak OpenAI's formats over the official openai SDK; pointed at the sim-server on
127.0.0.1 they call tools, stream, and read usage as against the real API, so the doors of
issue 20 can be tested with them offline.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator

import openai
import pytest

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

_MISSING = [name for name in ("pydantic_ai", "langchain_openai") if importlib.util.find_spec(name) is None]
if _MISSING:
    if os.environ.get("CI"):
        pytest.fail(f"CI: {', '.join(_MISSING)} not installed (pip install -e '.[dev]')", pytrace=False)
    pytest.skip(f"{', '.join(_MISSING)} not installed", allow_module_level=True)

from langchain_core.tools import tool  # noqa: E402 - after the check above
from langchain_openai import ChatOpenAI  # noqa: E402
from pydantic_ai import Agent  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402

KEY = "sk-sim-test-key-0123456789"
MODEL = "gpt-4o-mini"


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,))) as server:
        yield server


async def run_agent(
    sim: SimServerThread, prompt: str, *, streamed: bool = False
) -> tuple[str, list[str], int]:
    """Run a pydantic-ai research agent with a ``search`` tool: (output, queries, output tokens)."""
    seen: list[str] = []
    client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key=KEY, max_retries=0)
    agent = Agent(
        OpenAIChatModel(MODEL, provider=OpenAIProvider(openai_client=client)), system_prompt="You research."
    )

    @agent.tool_plain
    def search(query: str) -> str:
        """Search the offline corpus."""
        seen.append(query)
        return "Passage 3: rooftop hives thrive in Paris."

    async with client:
        if streamed:
            async with agent.run_stream(prompt) as run:
                return await run.get_output(), seen, run.usage.output_tokens
        result = await agent.run(prompt)
        return result.output, seen, result.usage.output_tokens


def test_pydantic_ai_calls_its_tool_and_answers_with_the_result(sim: SimServerThread) -> None:
    output, seen, tokens = asyncio.run(run_agent(sim, "Research urban beekeeping. [[sim:tool_turns=2]]"))

    assert seen and all(query.startswith("urban beekeeping") for query in seen)
    assert 'search said: "Passage 3: rooftop hives thrive in Paris."' in output
    assert sim.stats()["tool_calls"] == len(seen) and sim.stats()["ok"] == 3
    assert tokens == sim.stats()["tokens"]["output"]


def test_pydantic_ai_streams_the_same_answer(sim: SimServerThread) -> None:
    plain, seen, _ = asyncio.run(run_agent(sim, "Research tea. [[sim:tool_turns=1]]"))
    streamed, seen_streamed, _ = asyncio.run(
        run_agent(sim, "Research tea. [[sim:tool_turns=1]]", streamed=True)
    )

    assert streamed == plain and seen_streamed == seen
    assert sim.stats()["streamed"] >= 1


def test_langchain_chat_openai_binds_tools_streams_and_uses_the_responses_api(sim: SimServerThread) -> None:
    @tool
    def lookup(term: str) -> str:
        """Look a term up."""
        return "A term."

    chat = ChatOpenAI(model=MODEL, base_url=f"{sim.url}/v1", api_key=KEY, max_retries=0)  # type: ignore[arg-type]
    message = chat.bind_tools([lookup]).invoke("Research jazz.")
    assert message.tool_calls and {call["name"] for call in message.tool_calls} == {"lookup"}
    assert all(call["args"]["term"].startswith("jazz") for call in message.tool_calls)

    plain = chat.invoke("Research jazz.")
    chunks = list(
        ChatOpenAI(model=MODEL, base_url=f"{sim.url}/v1", api_key=KEY, stream_usage=True).stream(
            "Research jazz."
        )
    )  # type: ignore[arg-type]
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk  # type: ignore[assignment]
    assert whole.content == plain.content and whole.usage_metadata == plain.usage_metadata

    responses = ChatOpenAI(model=MODEL, base_url=f"{sim.url}/v1", api_key=KEY, use_responses_api=True)  # type: ignore[arg-type]
    assert responses.invoke("Research jazz.").text == plain.text
