"""``chainfleet plan --batch`` and the batch price: online against the batch API, in time and cost."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

import chainfleet.cli.plan  # noqa: F401 - registers the command
from chainfleet.cli import cli
from chainfleet.plan.batch import BatchPlan
from chainfleet.plan.online import Plan
from chainfleet.providers.prices import Price, price_for

PIPELINE = {
    "name": "content",
    "model": "openai:gpt-4o-mini",
    "input": "topic",
    "stages": [
        {"name": "research", "prompt": "Research {{ topic }}", "max_tokens": 1000},
        {"name": "write", "prompt": "Write {{ research }}", "max_tokens": 1000},
        {"name": "edit", "prompt": "Edit {{ write }}", "max_tokens": 1000},
    ],
}


def test_the_batch_price_is_half_the_list_price() -> None:
    assert price_for("openai:gpt-4o-mini@batch") == Price(0.075, 0.30)
    assert price_for("anthropic:claude-haiku-4-5@batch") == Price(0.50, 2.50)
    assert price_for("sim@batch") == Price(0.0, 0.0)
    assert price_for("openai:no-such-model@batch") is None


def test_plan_batch_compares_online_and_batch_in_time_and_cost(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(PIPELINE), encoding="utf-8")
    args = ["plan", str(path), "-n", "100000", "-c", "50", "--rpm", "500", "--batch", "--batch-hours", "2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    text = result.output
    # online: 300,000 calls at 500/min = 36,000 s; batch: 3 stages x 2 h = 21,600 s, at worst 3 x 24 h
    assert "36,000s (10 h) at -c 50" in text
    assert "21,600s (6 h) (3 x 2 h)" in text and "259,200s (72 h)" in text
    # 300,000 calls of 500 + 1,000 tokens at $0.15 / $0.60 per million: $202.50; batch half
    assert "$202.50" in text and "$101.25" in text and "batch saves $101.25 (50%)" in text
    assert "batch is also faster" in text


def test_online_is_faster_for_a_small_run() -> None:
    online = Plan(items=[100], concurrency=[25], call_seconds=[2, 2, 2])
    plan = BatchPlan(online=online, price=Price(0.15, 0.60), output_tokens=500)
    assert plan.online_seconds(100) == (24.0, 25)
    lines = "\n".join(plan.lines(100))
    assert "online is 450.0x faster" in lines  # 3 h of batches against 24 s online


def test_plan_batch_without_a_pipeline_says_the_cost_is_unknown() -> None:
    result = CliRunner().invoke(cli, ["plan", "-n", "1000", "-c", "10", "--batch"])
    assert result.exit_code == 0, result.output
    assert "unknown" in result.output and "cost: unknown without a pipeline" in result.output


def test_the_progress_line_shows_batches_and_requests_by_state() -> None:
    from chainfleet.chain.batch import BatchCounts
    from chainfleet.cli.view import batch_text

    counts = BatchCounts(
        submitted=4, in_progress=1, ended=3, in_batches=50, queued=7, succeeded=140, errored=2
    )
    assert batch_text(counts) == (
        "batches 1 in progress, 3 done, 0 failed; requests 50 in batches, 7 queued, 140 back, "
        "2 errored, 0 expired"
    )
