"""An agent stage's token budget (``max_tokens_total``): the turn that crosses it is the last."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chainfleet import run
from chainfleet.errors import PipelineError
from chainfleet.pipeline import Pipeline
from chainfleet.providers import ToolCall
from conftest import read_results
from unit.chain import agent_tools
from unit.chain.test_agent_loop import TOOLS, Scripted, agent


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    agent_tools.CALLS.clear()


def three_turns_of_calls() -> Scripted:
    """Three turns asking for ``search``, then an answer; every turn costs 10 tokens."""
    return Scripted([[ToolCall(f"c{turn}", "search", {"query": f"q{turn}"})] for turn in range(3)])


def research_turns(model: Scripted) -> int:
    return sum(1 for request in model.requests if request.tools)  # (the write stage has none)


def model_turns(out: Path) -> int:
    with sqlite3.connect(out / "run.db") as db:
        return int(db.execute("SELECT count(*) FROM agent_turns WHERE role = 'assistant'").fetchone()[0])


def test_the_turn_that_crosses_the_budget_is_the_last_and_the_item_fails_naming_the_stage(
    tmp_path: Path,
) -> None:
    model = three_turns_of_calls()
    pipeline = agent([{"function": f"{TOOLS}:search"}], max_tokens_total=25)
    report = run(pipeline, ["bees"], out=tmp_path, providers={"sim": model})
    assert report.items_failed == 1
    (result,) = read_results(tmp_path)
    message = result["error"]["message"]
    assert "agent stage 'research' reached max_tokens_total (25; 30 used) without an answer" in message
    assert "the last tool asked for was 'search'" in message
    assert result["error"]["type"] == "max_turns"
    assert research_turns(model) == 3 and model_turns(tmp_path) == 3  # 10, 20, then 30 >= 25
    assert [c[1]["query"] for c in agent_tools.CALLS] == ["q0", "q1"]  # turn 3's call is not made


def test_a_budget_the_agent_stays_under_changes_nothing(tmp_path: Path) -> None:
    model = three_turns_of_calls()
    pipeline = agent([{"function": f"{TOOLS}:search"}], max_tokens_total=41)
    report = run(pipeline, ["bees"], out=tmp_path, providers={"sim": model})
    assert report.items_failed == 0 and research_turns(model) == 4  # 40 tokens in four turns
    assert len(agent_tools.CALLS) == 3


def test_then_accept_keeps_the_last_answer_at_the_token_budget(tmp_path: Path) -> None:
    model = three_turns_of_calls()
    pipeline = agent([{"function": f"{TOOLS}:search"}], max_tokens_total=15, then="accept")
    report = run(pipeline, ["bees"], out=tmp_path, providers={"sim": model})
    assert report.items_failed == 0
    assert research_turns(model) == 2 and len(agent_tools.CALLS) == 1


def test_a_budget_below_one_is_refused_at_load_naming_file_line_stage_and_field(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "stages:\n"
        "  - name: research\n"
        '    prompt: "Research {{ input }}"\n'
        f"    tools: [{{function: {TOOLS}:search}}]\n"
        "    max_tokens_total: 0\n",
        encoding="utf-8",
    )
    with pytest.raises(PipelineError) as caught:
        Pipeline.from_yaml(path)
    assert caught.value.lines() == [
        f"{path}:5: stage 'research' (stages[0]), field 'max_tokens_total': "
        "Input should be greater than or equal to 1 (got 0)"
    ]
