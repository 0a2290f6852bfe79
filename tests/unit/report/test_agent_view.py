"""What a person sees of an agent run: report.html shows items' trajectories as conversations
(the prompt, each tool call with its arguments, each result, the final answer; untrusted tool
output escaped), the agents' figures (turns, tokens per turn, cost, per-tool figures) in
report.html and report.md, and the timeline's tool calls as bars of their own."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from chainfleet import Pipeline, run
from chainfleet.report.agents import tool_bars
from chainfleet.report.trajectory_view import trajectory_views
from chainfleet.store.runstore import RunStore
from conftest import read_report, read_results
from unit.chain import agent_tools

TOOLS = "unit.chain.agent_tools"
#: the seventh item needs three tool turns and its stage allows two model turns: it fails
TOPICS = [f"topic {i} [[sim:tool_turns={3 if i == 6 else 1}]]" for i in range(8)]


def agent_run(out: Path) -> Any:
    agent_tools.CALLS.clear()
    pipeline = Pipeline.from_dict(
        {
            "model": "sim",
            "sim": {"latency": 0.002},
            "input": "topic",
            "prices": {"sim": {"input": 3.0, "output": 15.0}},
            "stages": [
                {
                    "name": "research",
                    "system": "You research <carefully>.",
                    "prompt": "Research {{ topic }}.",
                    "tools": [{"function": f"{TOOLS}:fetch"}, {"function": f"{TOOLS}:broken"}],
                    "max_turns": 2,
                },
                {"name": "write", "prompt": "Write on {{ topic }} from {{ research }}"},
            ],
        }
    )
    return run(pipeline, TOPICS, out=out, concurrency=4)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("agentview")
    report = agent_run(folder)
    assert (report.items_succeeded, report.items_failed) == (7, 1)
    return folder


def details(page: str) -> list[str]:
    return re.findall(r"<details class=\"trajectory\".*?</details>", page, flags=re.S)


def test_report_html_shows_the_first_items_trajectory_as_a_conversation(out: Path) -> None:
    page = (out / "report.html").read_text(encoding="utf-8")
    blocks = details(page)
    first = read_results(out)[0]
    steps = first["trajectory"]["research"]
    opened = blocks[0]
    assert opened.startswith('<details class="trajectory" open>')
    assert f"item {first['id']}" in opened
    # what the agent was sent, escaped
    assert "You research &lt;carefully&gt;." in opened
    assert str(escape("Research topic 0 [[sim:tool_turns=1]].")) in opened
    # each tool call with its arguments, each result, then the final answer
    calls = [c for s in steps for c in s.get("tool_calls", [])]
    assert calls
    for call in calls:
        assert f"calls <b>{call['name']}</b>" in opened
        arguments = json.dumps(call["arguments"], ensure_ascii=False, sort_keys=True)
        assert str(escape(arguments)) in opened
    for result in (s for s in steps if "tool" in s):
        assert f"result of {result['tool']}" in opened
    answer = first["outputs"]["research"]
    assert "final answer, turn 2" in opened
    assert str(escape(answer.splitlines()[1])) in opened


def test_a_tools_untrusted_output_is_escaped_never_run(out: Path) -> None:
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "result of fetch" in page
    assert "<script" not in page.lower()  # the page has no script at all
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;&lt;b&gt;page&lt;/b&gt;" in page


def test_the_view_offers_other_items_and_the_first_failed_one(out: Path) -> None:
    page = (out / "report.html").read_text(encoding="utf-8")
    blocks = details(page)
    assert len(blocks) == 6  # the first five, then the first failure further on
    assert sum(" open>" in block.split("\n")[0] for block in blocks) == 1
    failed = blocks[-1]
    assert "item 7 &middot; failed" in failed
    assert "max_turns" in failed
    with RunStore.open(out / "run.db") as store:
        run_id = read_report(out)["run_id"]
        views = trajectory_views(store, run_id, store.items(run_id), first=1)
    assert [(v["id"], v["status"]) for v in views] == [("1", "succeeded"), ("7", "failed")]


def test_the_agents_figures_are_in_report_html_and_md(out: Path) -> None:
    report = read_report(out)
    research = report["agents"]["stages"]["research"]
    assert research["turns_max"] == 2 and research["model_turns"] == 7 * 2 + 2
    expected = (research["input_tokens"] * 3.0 + research["output_tokens"] * 15.0) / 1e6
    assert research["cost_usd"] == pytest.approx(expected, abs=1e-6) and research["cost_usd"] > 0
    assert research["input_tokens_per_turn"] == round(research["input_tokens"] / research["model_turns"], 1)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<h2>Agents</h2>" in page and f"${research['cost_usd']:.4f}" in page
    tools = report["agents"]["tools"]
    assert set(tools) == {"fetch", "broken"} and tools["broken"]["errors"] == tools["broken"]["calls"]
    md = (out / "report.md").read_text(encoding="utf-8")
    row = f"| research | 8 | {research['turns_mean']} | {research['turns_p95']} | 2 | "
    assert row + f"{research['input_tokens_per_turn']} | {research['output_tokens_per_turn']} |" in md


def test_the_timeline_draws_tool_calls_as_their_own_bars(out: Path) -> None:
    report = read_report(out)
    with RunStore.open(out / "run.db") as store:
        bars = list(tool_bars(store, report["run_id"]))
        calls = list(store.calls(report["run_id"]))
    results = read_results(out)
    made = [s for r in results for s in r["trajectory"]["research"] if "tool" in s]
    assert len(bars) == len(made) == len(agent_tools.CALLS)
    assert {b.tool for b in bars} == {"fetch", "broken"}
    assert all(b.is_error == (b.tool == "broken") for b in bars)
    for bar in bars:  # each tool call runs after the model turn that asked for it, before the next
        turns = sorted(
            (c for c in calls if c.index == bar.index and c.stage == "research"), key=lambda c: c.started
        )
        before = [c for c in turns if c.ended <= bar.started + 1e-6]
        after = [c for c in turns if c.started >= bar.ended - 1e-6]
        assert before and len(before) + len(after) == len(turns)
        assert 0 <= bar.ended - bar.started <= report["wall_seconds"]
    png = out / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
