"""Agent stages on the simulated model: the loop, tool errors, budgets, contracts, durable turns."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chainfleet import Completion, CompletionRequest, Pipeline, Provider, arun, run
from chainfleet.providers import ToolCall
from conftest import read_report, read_results
from unit.chain import agent_tools

TOOLS = "unit.chain.agent_tools"


def agent(tools: list[dict[str, Any]], **stage: Any) -> Pipeline:
    return Pipeline.from_dict(
        {
            "model": "sim",
            "sim": {"latency": 0},
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}.", "tools": tools, **stage},
                {"name": "write", "prompt": "Write on {{ topic }} from {{ research }}"},
            ],
        }
    )


def turns(out: Path) -> list[tuple[str, int, str, str | None, bool]]:
    with sqlite3.connect(out / "run.db") as db:
        rows = db.execute("SELECT item_id, turn, role, tool, is_error FROM agent_turns ORDER BY idx, seq")
        return [(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    agent_tools.CALLS.clear()


def test_the_model_calls_tools_then_answers_from_their_results(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:search"}, {"function": f"{TOOLS}:lookup"}])
    topics = ["bees [[sim:tool_turns=2]]", "tea [[sim:tool_turns=1]]"]
    report = run(pipeline, topics, out=tmp_path)
    assert report.items_failed == 0
    stored = turns(tmp_path)
    model_turns = {item: max(t for i, t, role, *_ in stored if i == item) for item, *_ in stored}
    assert sorted(model_turns.values()) == [2, 3]  # tool turns, then the answer
    assert len(agent_tools.CALLS) == sum(1 for row in stored if row[2] == "tool")
    assert all(isinstance(c[1].get("query", c[1].get("term")), str) for c in agent_tools.CALLS)
    results = read_results(tmp_path)
    assert all(r["status"] == "succeeded" and r["outputs"]["research"] for r in results)


def test_a_tool_that_raises_returns_its_error_to_the_model(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:broken"}])
    report = run(pipeline, ["bees [[sim:tool_turns=1]]"], out=tmp_path)
    assert report.items_failed == 0
    stored = turns(tmp_path)
    tools = [row for row in stored if row[2] == "tool"]
    assert tools and all(row[3:] == ("broken", True) for row in tools)
    assert [row[2] for row in stored][-1] == "assistant"  # then the model answered
    with sqlite3.connect(tmp_path / "run.db") as db:
        message = json.loads(db.execute("SELECT message FROM agent_turns WHERE role = 'tool'").fetchone()[0])
    assert "RuntimeError: the index is offline" in message["content"]
    (result,) = read_results(tmp_path)
    assert "broken failed: error: " in result["outputs"]["research"]  # the failure shows in the answer


def test_a_pydantic_model_parameter_is_validated_and_passed_as_the_model(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:filtered"}])
    report = run(pipeline, ["bees [[sim:tool_turns=1]]"], out=tmp_path)
    assert report.items_failed == 0
    assert agent_tools.CALLS and agent_tools.CALLS[0][0] == "filtered"
    assert isinstance(agent_tools.CALLS[0][1]["filters"]["year"], int)


def test_a_timeout_is_an_error_result_after_its_retries(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:slow", "timeout": 0.05, "retries": 1}])
    report = run(pipeline, ["bees [[sim:tool_turns=1]]"], out=tmp_path)
    assert report.items_failed == 0
    with sqlite3.connect(tmp_path / "run.db") as db:
        rows = db.execute("SELECT message FROM agent_turns WHERE role = 'tool'").fetchall()
    assert len(agent_tools.CALLS) == 2 * len(rows)  # each call and its one retry
    for (text,) in rows:
        message = json.loads(text)
        assert message["is_error"] and "timed out after 0.05 s" in message["content"]


def test_max_turns_fails_the_item_naming_the_stage_and_the_last_tool(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:search"}], max_turns=2)
    report = run(pipeline, ["bees [[sim:tool_turns=3]]"], out=tmp_path)
    assert report.items_failed == 1
    (result,) = read_results(tmp_path)
    assert result["status"] == "failed"
    assert "agent stage 'research' reached max_turns (2)" in result["error"]["message"]
    assert "the last tool asked for was 'search'" in result["error"]["message"]
    stored = turns(tmp_path)
    assert [row[1:3] for row in stored if row[2] == "assistant"] == [(1, "assistant"), (2, "assistant")]
    assert {row[1] for row in stored if row[2] == "tool"} == {1}  # turn 2's calls: no turn is left
    assert len(agent_tools.CALLS) == sum(row[2] == "tool" for row in stored)


def test_then_accept_keeps_the_last_answer_at_the_budget(tmp_path: Path) -> None:
    pipeline = agent([{"function": f"{TOOLS}:search"}], max_turns=1, then="accept")
    report = run(pipeline, ["bees [[sim:tool_turns=3]]"], out=tmp_path)
    assert report.items_failed == 0


def test_a_contract_applies_to_the_final_answer(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"facts": {"type": "array", "items": {"type": "string"}}},
              "required": ["facts"]}  # fmt: skip
    pipeline = agent([{"function": f"{TOOLS}:search"}], output=schema)
    report = run(pipeline, ["bees [[sim:tool_turns=2]]"], out=tmp_path)
    assert report.items_failed == 0
    (result,) = read_results(tmp_path)
    assert isinstance(result["outputs"]["research"]["facts"], list)


class Scripted(Provider):
    """A model that asks for the calls it is given, one turn each, then answers with what the
    tools said."""

    kind = "sim"

    def __init__(self, turns: list[list[ToolCall]]) -> None:
        self.turns = turns
        self.requests: list[CompletionRequest] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        done = sum(1 for m in request.messages or () if m["role"] == "assistant")
        if done < len(self.turns):
            return Completion(text="", tool_calls=tuple(self.turns[done]), input_tokens=5, output_tokens=5)
        said = [str(m["content"]) for m in request.messages or () if m["role"] == "tool"]
        return Completion(text=" | ".join(said), input_tokens=5, output_tokens=5)


def test_an_unknown_tool_and_bad_arguments_go_back_to_the_model(tmp_path: Path) -> None:
    asked = [ToolCall("c1", "serach", {"query": "x"}), ToolCall("c2", "search", {"limit": "many"})]
    model = Scripted([asked])
    pipeline = agent([{"function": f"{TOOLS}:search"}])
    report = run(pipeline, ["bees"], out=tmp_path, providers={"sim": model})
    assert report.items_failed == 0
    (result,) = read_results(tmp_path)
    unknown, bad = result["outputs"]["research"].split(" | ")
    assert unknown == "error: there is no tool 'serach'; the tools are: search"
    assert bad.startswith("error: the arguments do not match search's schema: query: Field required; ")
    assert "limit: Input should be a valid integer" in bad
    assert agent_tools.CALLS == []  # neither call reached the function
    assert model.requests[0].tools[0]["name"] == "search"


def test_a_tools_concurrency_holds_across_items_and_parallel_calls(tmp_path: Path) -> None:
    agent_tools.IN_FLIGHT[:] = [0, 0]
    calls = [ToolCall(f"c{i}", "counted", {"query": str(i)}) for i in range(4)]
    pipeline = agent([{"function": f"{TOOLS}:counted", "concurrency": 2}], parallel_tools=4)
    report = run(pipeline, [f"t{i}" for i in range(6)], out=tmp_path, providers={"sim": Scripted([calls])})
    assert report.items_failed == 0
    assert agent_tools.IN_FLIGHT[1] == 2  # 24 calls, 6 items x 4 parallel, never more than 2 at once


def test_max_tool_calls_is_a_budget_too(tmp_path: Path) -> None:
    calls = [ToolCall(f"c{i}", "search", {"query": str(i)}) for i in range(3)]
    pipeline = agent([{"function": f"{TOOLS}:search"}], max_tool_calls=2)
    report = run(pipeline, ["bees"], out=tmp_path, providers={"sim": Scripted([calls])})
    assert report.items_failed == 1
    (result,) = read_results(tmp_path)
    assert "reached max_tool_calls (2) without an answer" in result["error"]["message"]
    assert agent_tools.CALLS == []


def trajectory(out: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(out / "run.db") as db:
        return db.execute(
            "SELECT item_id, stage, seq, turn, role, message, tool, is_error FROM agent_turns "
            "ORDER BY item_id, stage, seq"
        ).fetchall()


def test_one_at_a_time_and_eight_at_once_give_the_same_trajectories(tmp_path: Path) -> None:
    pipeline = agent(
        [{"function": f"{TOOLS}:search"}, {"function": f"{TOOLS}:lookup"}, {"function": f"{TOOLS}:broken"}],
        gate=[{"min_words": 5}],
    )
    topics = [f"topic {i}" for i in range(12)]
    outcomes = []
    for width in (1, 8):
        out = tmp_path / f"c{width}"
        run(pipeline, topics, out=out, concurrency=width)
        results = sorted(read_results(out), key=lambda r: r["id"])
        outcomes.append((trajectory(out), [(r["outputs"], r.get("gates")) for r in results]))
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0][0]) > 3 * len(topics)


def test_results_show_each_items_trajectory_clipped_and_the_report_counts_turns_and_tools(
    tmp_path: Path,
) -> None:
    pipeline = agent([{"function": f"{TOOLS}:search"}, {"function": f"{TOOLS}:broken"}])
    topics = [f"topic {i} [[sim:tool_turns={1 + i % 3}]]" for i in range(6)]
    run(pipeline, topics, out=tmp_path, trajectory_chars=16)
    results = read_results(tmp_path)
    stored = turns(tmp_path)
    clipped: list[bool] = []
    for result in results:
        steps = result["trajectory"]["research"]
        assert [s["turn"] for s in steps if "text" in s] == list(range(1, len(
            [s for s in steps if "text" in s]) + 1))  # fmt: skip
        calls = [c for s in steps for c in s.get("tool_calls", [])]
        answered = [s for s in steps if "tool" in s]
        assert [c["id"] for c in calls] == [s["call_id"] for s in answered]
        assert all(len(s["result"]) <= 16 + len("... (9,999 more characters)") for s in answered)
        clipped += [s["result"].endswith("more characters)") for s in answered if s["tool"] == "search"]
        assert "write" not in result["trajectory"]  # a plain stage has none
    assert clipped and all(clipped)  # every search result is longer than 16 characters
    report = read_report(tmp_path)["agents"]
    research = report["stages"]["research"]
    turn_figures = {key: research[key] for key in ("items", "turns_mean", "turns_p95", "turns_max")}
    assert turn_figures == {"items": 6, "turns_mean": 3.0, "turns_p95": 4.0, "turns_max": 4}
    assert research["model_turns"] == 18  # and the tokens of those turns, per turn
    assert research["input_tokens"] > 0 and research["output_tokens"] > 0
    tool_rows = [row for row in stored if row[2] == "tool"]
    assert report["tools"]["broken"]["errors"] == report["tools"]["broken"]["calls"]
    assert sum(t["calls"] for t in report["tools"].values()) == len(tool_rows)
    assert report["tools"]["search"]["errors"] == 0
    assert "## Agents" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_a_failed_gate_runs_the_agent_again_with_the_feedback(tmp_path: Path) -> None:
    """An agent's gate fails its first answer; the revision is a new conversation whose prompt
    carries the feedback (its tools run again for it), and the trajectory shows the last one."""
    pipeline = agent(
        [{"function": f"{TOOLS}:search"}],
        gate=[{"name": "cites", "must_include": ["passages about"]}, {"max_words": 5}],
        on_fail="revise",
        max_revisions=1,
        then="accept",
    )
    report = run(pipeline, ["bees [[sim:tool_turns=1]]"], out=tmp_path)
    assert report.items_failed == 0
    with sqlite3.connect(tmp_path / "run.db") as db:
        keys = db.execute("SELECT COUNT(DISTINCT key) FROM agent_turns").fetchone()[0]
        first = json.loads(db.execute("SELECT message FROM agent_turns WHERE seq = 0 LIMIT 1").fetchone()[0])
    assert keys == 2  # the first try and its revision, each its own conversation
    assert first["role"] == "assistant"
    (result,) = read_results(tmp_path)
    assert result["gates"]["research"]["outcome"] == "accepted"
    assert len(result["gates"]["research"]["tries"]) == 2


def test_results_parquet_has_the_trajectory_as_a_json_column(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    run(agent([{"function": f"{TOOLS}:search"}]), ["tea", "bees"], out=tmp_path, parquet=True)
    frame = pandas.read_parquet(tmp_path / "results.parquet")
    expected = [r["trajectory"] for r in read_results(tmp_path)]
    assert [json.loads(text) for text in frame["trajectory"]] == expected


def test_compare_says_the_trajectories_are_identical(tmp_path: Path) -> None:
    from click.testing import CliRunner

    import chainfleet.cli.compare  # noqa: F401 - registers the command
    from chainfleet.cli import cli

    (tmp_path / "agent.yaml").write_text(
        "model: sim\nsim: {latency: 0.01}\ninput: topic\nstages:\n"
        "  - name: research\n    prompt: 'Research {{ topic }}.'\n"
        f"    tools: [{{function: '{TOOLS}:search'}}, {{function: '{TOOLS}:broken'}}]\n",
        encoding="utf-8",
    )
    (tmp_path / "topics.txt").write_text("tea\nbees\ncoffee\nrivers\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        ["compare", str(tmp_path / "agent.yaml"), "-i", str(tmp_path / "topics.txt"), "-c", "4",
         "-o", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Agent trajectories identical between the two modes: yes (4 items)" in result.output
    report = json.loads((tmp_path / "cmp" / "report.json").read_text(encoding="utf-8"))
    assert report["trajectories_identical"] is True and report["trajectories"] == {"items": 4, "differing": 0}


def test_a_tools_rpm_holds_on_the_runs_clock_and_its_wait_is_reported(tmp_path: Path) -> None:
    """On virtual time (no real seconds): 24 calls of a tool limited to 60 a minute never come
    more than two (its burst) in any one second, and the report says how long they waited."""
    from chainfleet.clock import VirtualClock

    clock = VirtualClock()
    agent_tools.CLOCK[:] = [clock]
    agent_tools.STARTS.clear()
    calls = [ToolCall(f"c{i}", "timed", {"query": str(i)}) for i in range(4)]
    pipeline = agent([{"function": f"{TOOLS}:timed", "rpm": 60}])
    topics = [f"t{i}" for i in range(6)]

    async def main() -> Any:
        return await arun(pipeline, topics, out=tmp_path, clock=clock, providers={"sim": Scripted([calls])})

    report = asyncio.run(clock.run(main()))
    assert report.items_failed == 0
    starts = sorted(agent_tools.STARTS)
    assert len(starts) == 24
    # at most 2 in any second: the third call after any call comes a second or more later
    assert all(b - a >= 1.0 - 1e-6 for a, b in zip(starts, starts[2:], strict=False))
    assert starts[-1] - starts[0] >= 21.0  # 60 a minute: 24 calls take more than 21 s
    tools = read_report(tmp_path)["agents"]["tools"]
    assert tools["timed"]["waited_seconds"] > 21 * 12 / 2  # most calls queued for their turn
