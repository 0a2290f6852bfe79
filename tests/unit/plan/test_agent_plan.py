"""``chainfleet plan`` with agent stages: each model turn an item is a call, and in batch mode a
batch round, with the turns' assumption said."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import chainfleet.cli.plan  # noqa: F401 - registers the command
from chainfleet.cli import cli

TOOL = {"function": "unit.chain.agent_tools:search"}


def plan(tmp_path: Path, pipeline: dict[str, Any], *args: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline), encoding="utf-8")
    result = CliRunner().invoke(cli, ["plan", str(path), "-n", "1000", "-c", "10", *args])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def pipeline(model: str, research: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "model": model,
        "input": "topic",
        **top,
        "stages": [
            {
                "name": "research",
                "prompt": "Research {{ topic }}",
                "max_tokens": 1000,
                "tools": [TOOL],
                **research,
            },
            {"name": "write", "prompt": "Write {{ research }}", "max_tokens": 1000},
        ],
    }


def test_batch_counts_a_round_and_a_call_per_agent_turn_from_the_sims_tool_turns(tmp_path: Path) -> None:
    lines = plan(tmp_path, pipeline("sim", {}, sim={"latency": 2, "tool_turns": 2}), "--batch")
    assert "chain: research, write; 4.00 calls, 8 s a chain (3.00 x 2 s + 1.00 x 2 s)" in lines
    assert "agent stage research: 3 model turns an item (the sim's 2 tool turns, then the answer)." in lines
    assert "1,000 items, 2 stages in 4 batch rounds (agent turns): online against batch" in lines
    assert any(line.split()[:3] == ["batch", "14,400s", "(4"] and "(4 x 1 h)" in line for line in lines)


def test_a_real_model_is_planned_with_three_turns_or_the_ones_told_and_priced_per_turn(
    tmp_path: Path,
) -> None:
    assumed = plan(tmp_path, pipeline("openai:gpt-4o-mini", {}), "--batch")
    told = plan(tmp_path, pipeline("openai:gpt-4o-mini", {}), "--batch", "--agent-turns", "5")
    assert (
        "agent stage research: 3 model turns an item (assumed: 2 tool turns and the answer "
        "(--agent-turns to change))." in assumed
    )
    assert "agent stage research: 5 model turns an item (--agent-turns)." in told
    assert "1,000 items, 2 stages in 6 batch rounds (agent turns): online against batch" in told

    def batch_cost(lines: list[str]) -> float:
        (row,) = [line for line in lines if line.split()[:1] == ["batch"] and " x 1 h)" in line]
        return float(row.rsplit("$", 1)[1].replace(",", ""))

    assert batch_cost(told) / batch_cost(assumed) == pytest.approx(6 / 4, rel=0.01)


def test_the_turns_are_capped_at_the_stages_max_turns(tmp_path: Path) -> None:
    lines = plan(tmp_path, pipeline("sim", {"max_turns": 2, "prompt": "R {{ topic }} [[sim:tool_turns=3]]"}))
    said = "(the sim's 3 tool turns, then the answer, capped at max_turns 2)."
    assert f"agent stage research: 2 model turns an item {said}" in lines
