"""Native structured output through the real OpenAI and Anthropic SDKs, over loopback HTTP
against ``chainfleet sim-server``: strict ``response_format``, JSON mode, the schema in the
prompt, Anthropic's forced tool call; and repairs when the server breaks its own replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from chainfleet import CompletionRequest, Pipeline, arun
from chainfleet.pipeline.contracts import Contract
from chainfleet.providers import Provider
from chainfleet.providers.anthropic import AnthropicProvider
from chainfleet.providers.openai import OpenAIProvider
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from conftest import read_report, read_results
from sim_cli import point_sdks_at

KEY = "sk-test-structured-0123456789-SECRET"
GPT, CLAUDE = "gpt-sim", "claude-sim-test"

#: ``open_questions`` is optional: strict mode needs the schema adapted (every property required)
RESEARCH: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {"type": "array", "items": {"type": "string"}, "minItems": 3},
        "sources": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "url": {"type": "string"}},
                "required": ["title", "url"],
            },
        },
        "open_questions": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["facts", "sources"],
}
CONTRACT = Contract.from_value(RESEARCH)


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,)))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread, monkeypatch: pytest.MonkeyPatch) -> SimServerThread:
    point_sdks_at(server, monkeypatch, KEY)
    monkeypatch.setenv("LOCAL_KEY", KEY)
    return server


def call(provider: Provider, **kw: Any) -> Any:
    async def main() -> Any:
        try:
            return await provider.complete(CompletionRequest(**kw))
        finally:
            await provider.aclose()

    return asyncio.run(main())


def test_openai_json_schema_is_sent_strict_and_answered_with_valid_json(sim: SimServerThread) -> None:
    provider = OpenAIProvider(api_key=KEY, base_url=f"{sim.url}/v1")

    done = call(provider, model=GPT, prompt="Research tea.", schema=RESEARCH, schema_name="research")

    value = json.loads(done.text)
    assert CONTRACT.problem(value) is None and len(value["facts"]) >= 3
    assert done.output_tokens > 0
    # the server refuses a schema strict mode does not allow: this one went out adapted
    assert sim.stats()["structured"] == {"json_schema": 1}


def test_the_server_refuses_an_unadapted_schema_in_strict_mode_as_openai_does(sim: SimServerThread) -> None:
    client = openai.OpenAI(api_key=KEY, base_url=f"{sim.url}/v1", max_retries=0)
    fmt = {"type": "json_schema", "json_schema": {"name": "research", "schema": RESEARCH, "strict": True}}

    with pytest.raises(openai.BadRequestError, match="additionalProperties"):
        client.chat.completions.create(
            model=GPT,
            messages=[{"role": "user", "content": "Research tea."}],
            response_format=fmt,  # type: ignore[arg-type]
        )
    client.close()


def test_anthropic_forces_a_tool_call_and_returns_its_input_as_the_json(sim: SimServerThread) -> None:
    provider = AnthropicProvider(api_key=KEY, base_url=sim.url)

    done = call(provider, model=CLAUDE, prompt="Research tea.", schema=RESEARCH, max_tokens=500)

    assert CONTRACT.problem(json.loads(done.text)) is None
    assert sim.stats()["structured"] == {"tool": 1}


def test_anthropic_sees_the_tool_use_block_with_the_sdk(sim: SimServerThread) -> None:
    """What the server sends is what the real API sends: a tool_use block, stop_reason tool_use."""
    client = anthropic.Anthropic(api_key=KEY, base_url=sim.url, max_retries=0)
    message = client.messages.create(
        model=CLAUDE,
        max_tokens=400,
        messages=[{"role": "user", "content": "Research tea."}],
        tools=[{"name": "research", "input_schema": RESEARCH}],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "research"},
    )
    client.close()
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "research"
    assert CONTRACT.problem(block.input) is None


def test_a_schema_that_is_not_an_object_is_wrapped_for_the_tool_and_unwrapped(sim: SimServerThread) -> None:
    provider = AnthropicProvider(api_key=KEY, base_url=sim.url)
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 2}

    done = call(provider, model=CLAUDE, prompt="List tea facts.", schema=schema)

    value = json.loads(done.text)
    assert isinstance(value, list) and len(value) >= 2


def pipeline(model: str, *, providers: dict[str, Any] | None = None, **research: Any) -> Pipeline:
    data: dict[str, Any] = {
        "model": model,
        "input": "topic",
        "stages": [
            {"name": "research", "prompt": "Research {{ topic }}.", "output": RESEARCH, **research},
            {
                "name": "write",
                "prompt": "Write on {{ topic }} from:\n{{ research.facts | join('\\n') }}",
                "gate": [{"min_words": 5}, {"judge": {"rubric": "clear and sourced", "threshold": 3}}],
                "on_fail": "revise",
            },
        ],
    }
    if providers is not None:
        data["providers"] = providers
    return Pipeline.from_dict(data)


@pytest.mark.parametrize("model", [f"openai:{GPT}", f"anthropic:{CLAUDE}"])
def test_a_contract_and_a_judge_end_to_end_natively(sim: SimServerThread, tmp_path: Path, model: str) -> None:
    topics = ["tea", "coffee", "cocoa"]

    report = asyncio.run(arun(pipeline(model), topics, out=tmp_path, concurrency=3))

    assert report.exit_code == 0
    records = read_results(tmp_path)
    assert all(CONTRACT.problem(r["outputs"]["research"]) is None for r in records)
    # research and every judge verdict asked natively; the drafts are prose
    mode = "json_schema" if model.startswith("openai") else "tool"
    judge_calls = read_report(tmp_path)["gates"]["judge_calls"]
    assert judge_calls >= 3
    assert sim.stats()["structured"] == {mode: 3 + judge_calls}


@pytest.mark.parametrize(("structured", "mode"), [("json_object", "json_object"), ("prompt", "prompt")])
def test_json_mode_and_the_prompt_alone_carry_the_schema_in_the_prompt(
    sim: SimServerThread, tmp_path: Path, structured: str, mode: str
) -> None:
    local = {
        "kind": "openai",
        "base_url": f"{sim.url}/v1",
        "api_key_env": "LOCAL_KEY",
        "structured": structured,
    }

    report = asyncio.run(
        arun(pipeline("local:llama-sim", providers={"local": local}), ["tea", "coffee"], out=tmp_path)
    )

    assert report.exit_code == 0
    records = read_results(tmp_path)
    assert all(CONTRACT.problem(r["outputs"]["research"]) is None for r in records)
    # prompt mode's replies come in a fenced block after a line of prose: parsed all the same
    assert sim.stats()["structured"].get(mode, 0) >= 2 + read_report(tmp_path)["gates"]["judge_calls"]
    assert set(sim.stats()["structured"]) == {mode}


@pytest.mark.parametrize("model", [f"openai:{GPT}", f"anthropic:{CLAUDE}"])
def test_broken_replies_from_the_server_are_repaired_and_counted(
    sim: SimServerThread, tmp_path: Path, model: str
) -> None:
    sim.configure(invalid_output_rate=0.2, seed=3)
    topics = [f"topic {i}" for i in range(10)]

    report = asyncio.run(arun(pipeline(model, max_repairs=6), topics, out=tmp_path, concurrency=4))

    assert report.exit_code == 0
    gates = read_report(tmp_path)["gates"]
    research_repairs = gates["repairs"]["research"]
    broken = sim.stats()["faults"]["invalid_output"]
    assert research_repairs >= 2
    # each broken reply was asked again once: research's and the judges' repairs
    judge_repairs = broken - research_repairs
    assert judge_repairs >= 0
    assert report.calls["total"] == sim.stats()["ok"] == sim.stats()["calls"]
    records = read_results(tmp_path)
    assert sum(r["gates"]["research"]["repairs"] for r in records) == research_repairs


def test_after_max_repairs_over_http_the_item_fails_naming_the_problem(
    sim: SimServerThread, tmp_path: Path
) -> None:
    sim.configure(invalid_output_rate=1.0)

    report = asyncio.run(
        arun(pipeline(f"anthropic:{CLAUDE}", max_repairs=1), ["tea"], out=tmp_path, retry_passes=0)
    )

    assert report.exit_code == 1
    error = read_results(tmp_path)[0]["error"]
    assert error["type"] == "invalid_output" and error["stage"] == "research"
    assert "after 1 repair" in error["message"] and "'facts'" in error["message"]
    assert sim.stats()["ok"] == 2  # the first reply and one repair


@pytest.mark.parametrize("model", [f"openai:{GPT}", f"anthropic:{CLAUDE}"])
def test_batch_mode_asks_for_structure_the_same_way(sim: SimServerThread, tmp_path: Path, model: str) -> None:
    data = pipeline(model).model_dump(exclude_defaults=True, mode="json")
    data["batch"] = {"window": 0.1, "poll": 0.1, "poll_max": 0.3}
    topics = ["tea", "coffee", "cocoa"]

    report = asyncio.run(arun(Pipeline.from_dict(data), topics, out=tmp_path, batch=True))

    assert report.exit_code == 0
    records = read_results(tmp_path)
    assert all(CONTRACT.problem(r["outputs"]["research"]) is None for r in records)
    mode = "json_schema" if model.startswith("openai") else "tool"
    judge_calls = read_report(tmp_path)["gates"]["judge_calls"]
    assert sim.stats()["structured"] == {mode: 3 + judge_calls}


def test_a_resumed_anthropic_batch_reads_its_tool_replies(sim: SimServerThread, tmp_path: Path) -> None:
    """A batch submitted by a stopped run is read by a new process, which never built its
    lines: the forced tool's replies must still come back as the structured output."""
    data = pipeline(f"anthropic:{CLAUDE}").model_dump(exclude_defaults=True, mode="json")
    data["batch"] = {"window": 0.1, "poll": 0.1, "poll_max": 0.2}
    data["stages"] = data["stages"][:1]  # research only: its contract
    sim._call(lambda: sim.server.batch.configure(delay=1.5))
    topics = ["tea", "coffee", "cocoa"]

    async def stopped() -> None:
        """Stop the run once its batch is submitted and its id stored (not after a fixed time:
        on a loaded machine 0.8 s was sometimes before the batch existed)."""
        run = asyncio.ensure_future(arun(Pipeline.from_dict(data), topics, out=tmp_path, batch=True))
        deadline = asyncio.get_running_loop().time() + 60
        while not _submitted_batches(tmp_path / "run.db"):
            assert not run.done() and asyncio.get_running_loop().time() < deadline, "no batch was submitted"
            await asyncio.sleep(0.02)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run

    asyncio.run(stopped())
    assert sim._call(sim.server.batch.stats)["jobs_created"] == 1  # in flight when it stopped
    sim._call(lambda: sim.server.batch.configure(delay=0.1))

    report = asyncio.run(arun(Pipeline.from_dict(data), topics, out=tmp_path, batch=True, resume=True))

    assert report.exit_code == 0
    assert sim._call(sim.server.batch.stats)["jobs_created"] == 1  # waited on, not sent again
    records = read_results(tmp_path)
    assert all(CONTRACT.problem(r["outputs"]["research"]) is None for r in records)
    assert sum(r["gates"]["research"]["repairs"] for r in records) == 0


def _submitted_batches(db: Path) -> int:
    """Batch chunks the run has stored with the provider's batch id (0 before the store exists)."""
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM batch_chunks WHERE batch_id IS NOT NULL").fetchone()
            return int(row[0])
        except sqlite3.OperationalError:  # the tables are not made yet
            return 0
