"""``chainfleet plan``: the lesson's table computed right, and the concurrency a limit sustains."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import chainfleet.cli.plan  # noqa: F401 - registers the command
from chainfleet.cli import cli
from chainfleet.plan.online import Plan

LESSON = Plan(items=[10, 50, 100], concurrency=[1, 5, 10, 25], call_seconds=[10, 10, 10])


@pytest.mark.parametrize(
    ("items", "concurrency", "seconds"),
    [
        (10, 1, 300),
        (50, 1, 1500),
        (100, 1, 3000),
        (10, 5, 60),
        (50, 5, 300),
        (100, 5, 600),  # the lesson says 90, 330, 630
        (10, 10, 30),
        (50, 10, 150),
        (100, 10, 300),  # the lesson says 60, 180, 330
        (10, 25, 30),
        (50, 25, 60),
        (100, 25, 120),  # the lesson says 30, 90, 150
    ],
)
def test_the_lessons_table_correctly_computed(items: int, concurrency: int, seconds: float) -> None:
    cell = LESSON.cell(items, concurrency)
    assert cell.seconds == seconds and cell.bound_by == "latency"


def test_sixty_requests_a_minute_sustain_ten_thirty_second_chains_not_fifteen() -> None:
    plan = Plan(items=[100], concurrency=[10, 15, 25], call_seconds=[10, 10, 10], rpm=60)
    assert plan.best_concurrency() == pytest.approx(10.0)
    # beyond 10 in flight the limit decides: 300 calls at 1 a second
    assert plan.cell(100, 10).seconds == 300
    assert plan.cell(100, 25).seconds == 300 and plan.cell(100, 25).bound_by == "requests/min"


def test_the_tokens_limit_binds_when_calls_are_big() -> None:
    plan = Plan(
        items=[1000], concurrency=[50], call_seconds=[2, 2, 2], rpm=500, tpm=200_000, tokens_per_call=2000
    )
    rate, name = plan.rate_limit()  # type: ignore[misc]
    assert name == "tokens/min" and rate * 60 == pytest.approx(100)
    assert plan.cell(1000, 50).seconds == pytest.approx(3000 / 100 * 60)
    assert plan.best_concurrency() == pytest.approx(100 / 60 * 6 / 3)


def test_a_tokens_limit_needs_tokens_per_call() -> None:
    with pytest.raises(ValueError, match="tokens per call"):
        Plan(items=[1], concurrency=[1], call_seconds=[1], tpm=1000)


def test_the_command_prints_the_table_and_the_binding_limit() -> None:
    result = CliRunner().invoke(cli, ["plan", "--rpm", "60", "-c", "1,5,10,25"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["mode", "10", "items", "50", "items", "100", "items"]
    assert "300s (5 min)" in lines[2] and "3,000s (50 min)" in lines[2]
    assert "60s" in lines[3]
    assert "requests/min limit binds" in result.output
    assert "about 10 chains in flight" in result.output


def test_the_command_reads_the_pipeline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "sim: {latency: 2}\nstages:\n  - {name: a, prompt: x}\n  - {name: b, prompt: y}\n", encoding="utf-8"
    )
    result = CliRunner().invoke(cli, ["plan", str(pipeline), "-n", "8", "-c", "1,4"])
    assert result.exit_code == 0, result.output
    assert "chain: a, b; 4 s a chain" in result.output
    assert "32s" in result.output and "8s" in result.output


def test_bad_numbers_exit_2_with_one_line() -> None:
    result = CliRunner().invoke(cli, ["plan", "-n", "ten"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --items:")


def test_a_gated_pipeline_is_planned_with_its_judge_revision_and_repair_calls() -> None:
    # examples/content_gated.yaml, 10 items: `compare` measured 51 calls, 28.3 s one at a time and
    # 7.7 s at -c 5; counting 3 calls an item, plan said 16 s and 3 s
    result = CliRunner().invoke(cli, ["plan", "examples/content_gated.yaml", "-n", "10", "-c", "1,5"])
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    assert rows[2].split() == ["sequential", "28s"] and rows[3].split()[-1] == "6s"
    assert "5.10 calls" in result.output  # 51 calls for 10 items
    assert "1.24 judge + 0.44 revision + 0.42 repair calls" in result.output
    assert "assuming 80% of gated tries pass (--pass-rate)" in result.output
    assert "15% of schema replies need a repair" in result.output  # the sim's invalid_output_rate


def test_the_pass_rate_and_the_model_are_settable() -> None:
    args = ["plan", "examples/content_gated.yaml", "-n", "10", "-c", "1"]
    surer = CliRunner().invoke(cli, [*args, "--pass-rate", "1", "--repair-rate", "0"])
    assert surer.exit_code == 0, surer.output
    assert "calls an item: 4.00 = 3 stages + 1.00 judge + 0.00 revision + 0.00 repair" in surer.output
    other = CliRunner().invoke(cli, [*args, "--model", "openai:gpt-4o-mini"])
    assert other.exit_code == 0, other.output
    assert "2% of schema replies" in other.output  # not the sim's rate: another model
    wrong = CliRunner().invoke(cli, [*args, "--model", "opnai:gpt-4o"])
    assert wrong.exit_code == 2 and "did you mean 'openai'" in wrong.stderr
    bad = CliRunner().invoke(cli, [*args, "--pass-rate", "0"])
    assert bad.exit_code == 2
