"""The OpenAI provider over the Responses API (a named endpoint with ``api: responses``), with
the real openai SDK against the sim-server's ``/v1/responses``: an agent stage's function calls
come back as ``function_call`` items and their results go out as ``function_call_output`` items;
the sim is deterministic, so the same run over chat completions gives the same trajectory (every
tool call and argument) and the same outputs. Plain stages and structured answers work too, and
usage reaches the report."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet import Pipeline, arun
from chainfleet.errors import ConfigError
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from conftest import read_report, read_results
from sim_cli import point_sdks_at
from unit.chain import agent_tools

KEY = "sk-test-responses-0123456789-SECRET"
TOOLS = "unit.chain.agent_tools"


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,)))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread, monkeypatch: pytest.MonkeyPatch) -> SimServerThread:
    point_sdks_at(server, monkeypatch, KEY)
    monkeypatch.setenv("SIM_KEY", KEY)  # the named endpoints' api_key_env
    agent_tools.CALLS.clear()
    return server


def pipeline(sim: SimServerThread, api: str, **stage: Any) -> Pipeline:
    tools = [{"function": f"{TOOLS}:search"}, {"function": f"{TOOLS}:broken"}]
    return Pipeline.from_dict(
        {
            "providers": {
                "oai": {"kind": "openai", "base_url": f"{sim.url}/v1", "api_key_env": "SIM_KEY", "api": api}
            },
            "model": "oai:gpt-sim",
            "prices": {"oai:gpt-sim": {"input": 1.0, "output": 2.0}},
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}.", "tools": tools, **stage},
                {"name": "write", "prompt": "Write on {{ topic }} from {{ research }}"},
            ],
        }
    )


TOPICS = [f"topic {i} [[sim:tool_turns={1 + i % 3}]]" for i in range(6)]


def run(
    sim: SimServerThread, api: str, out: Path, **stage: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sim.reset()
    report = asyncio.run(arun(pipeline(sim, api, **stage), TOPICS, out=out, concurrency=3, cache=None))
    assert report.items_succeeded == len(TOPICS)
    return read_results(out), sim.stats()


def shape(results: list[dict[str, Any]]) -> list[list[tuple[Any, ...]]]:
    """Each item's trajectory without the provider's call ids: turn, tool, arguments, result."""
    return [
        [(s.get("turn"), s.get("tool"), json.dumps(s.get("arguments"), sort_keys=True), s.get("result"))
         for s in r["trajectory"]["research"]]
        for r in results
    ]  # fmt: skip


def test_an_agent_over_the_responses_api_matches_chat_completions(
    sim: SimServerThread, tmp_path: Path
) -> None:
    chat, chat_stats = run(sim, "chat", tmp_path / "chat")
    responses, stats = run(sim, "responses", tmp_path / "responses")
    model_turns = len(TOPICS) + sum(1 + i % 3 for i in range(len(TOPICS)))
    # every call went to /v1/responses: each agent turn and each plain write stage, once
    assert stats["routes"] == {"/v1/responses": model_turns + len(TOPICS)}
    assert chat_stats["routes"] == {"/v1/chat/completions": model_turns + len(TOPICS)}
    assert all(count == 1 for count in stats["completed_by_key"].values())
    assert stats["tool_calls"] == chat_stats["tool_calls"] > len(TOPICS)
    # the same trajectories (tools, arguments, results) and the same answers, item by item
    assert shape(responses) == shape(chat)
    assert any(s.get("tool") == "broken" for r in responses for s in r["trajectory"]["research"])
    assert [r["outputs"] for r in responses] == [r["outputs"] for r in chat]
    for result in responses:  # the tools' results reached the model through function_call_output
        steps = result["trajectory"]["research"]
        if any(s.get("tool") == "search" for s in steps):
            assert "search said: " in result["outputs"]["research"]
    # usage came back through the Responses API's usage block: the same tokens as over chat
    report, chat_report = read_report(tmp_path / "responses"), read_report(tmp_path / "chat")
    assert report["tokens"]["input"] > 0 and report["tokens"]["output"] > 0
    assert report["tokens"] == chat_report["tokens"]
    assert report["tokens"]["output"] == stats["tokens"]["output"]
    research = report["agents"]["stages"]["research"]
    assert research["turns_max"] == 4 and research["model_turns"] == model_turns
    assert research == chat_report["agents"]["stages"]["research"]
    assert research["output_tokens_per_turn"] == round(research["output_tokens"] / model_turns, 1)
    assert research["cost_usd"] == round((research["input_tokens"] + 2 * research["output_tokens"]) / 1e6, 6)


def test_a_contract_holds_on_an_answer_over_the_responses_api(sim: SimServerThread, tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
        "required": ["facts"],
        "additionalProperties": False,
    }
    results, stats = run(sim, "responses", tmp_path, output=schema)
    assert all(isinstance(r["outputs"]["research"]["facts"], list) for r in results)
    assert stats["structured"] == {"json_schema": len(TOPICS)}  # asked through text.format


def test_api_responses_is_refused_on_an_anthropic_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="api: responses is an OpenAI API"):
        Pipeline.from_dict(
            {
                "providers": {"claude": {"kind": "anthropic", "api": "responses"}},
                "model": "claude:claude-sim",
                "stages": [{"name": "a", "prompt": "{{ topic }}"}],
                "input": "topic",
            }
        )
