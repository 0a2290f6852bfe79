"""Prices: a misspelt model is never priced as a neighbour; a cost budget needs every price;
a shared prices file; ``--model smi`` suggests ``sim`` (issue 23, part 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet.cli import cli
from chainfleet.providers.prices import PRICES_AS_OF, Price, near_model, price_for

PIPELINE = "model: openai:gpt-5\ninput: topic\nstages:\n  - {name: a, prompt: 'A {{ topic }}'}\n"


def run(tmp_path: Path, pipeline: str, *args: str) -> Result:
    (tmp_path / "p.yaml").write_text(pipeline, encoding="utf-8")
    (tmp_path / "t.txt").write_text("bees\nants\n", encoding="utf-8")
    p, t, out = (str(tmp_path / name) for name in ("p.yaml", "t.txt", "out"))
    return CliRunner().invoke(cli, ["run", p, "-i", t, "--out", out, "-q", *args])


@pytest.mark.parametrize(
    ("spec", "near"),
    [("openai:gpt-4o-mni", "gpt-4o-mini"), ("openai:gpt-4.1-nanoo", "gpt-4.1-nano"),
     ("anthropic:claude-haiku-4.5", "claude-haiku-4-5")],
)
def test_a_misspelt_model_has_no_price_and_a_did_you_mean(spec: str, near: str) -> None:
    assert price_for(spec) is None  # gpt-4o-mni was priced as gpt-4o: 9x too dear
    assert near_model(spec) == near


@pytest.mark.parametrize(
    ("spec", "price"),
    [
        ("openai:gpt-4o-mini-2024-07-18", Price(0.15, 0.60)),
        ("anthropic:claude-sonnet-4-5-20250929", Price(3, 15)),
        ("openai:gpt-4o-latest", Price(2.5, 10)),
    ],
)
def test_a_dated_snapshot_costs_what_its_family_costs(spec: str, price: Price) -> None:
    assert price_for(spec) == price
    assert near_model(spec) is None


def test_the_table_says_when_it_was_written() -> None:
    assert PRICES_AS_OF[:4].isdigit() and len(PRICES_AS_OF) == 10


def test_a_cost_budget_with_an_unpriced_model_is_refused_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-dummy")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: no call may go
    done = run(tmp_path, PIPELINE, "--max-cost", "0.001")
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert "--max-cost" in lines[0] and "openai:gpt-5" in lines[0] and "prices:" in lines[0]
    assert "--prices FILE" in lines[0] and "Traceback" not in done.output
    assert not (tmp_path / "out" / "run.db").exists()


def test_a_prices_file_makes_the_budget_enforceable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file prices gpt-5, so the budget check passes; the run then reaches the (absent)
    server: its connection failure, not the budget, is what ends it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-dummy")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    prices = tmp_path / "prices.yaml"
    prices.write_text("prices:\n  openai:gpt-5: {input: 1.25, output: 10.0}\n", encoding="utf-8")
    done = run(tmp_path, PIPELINE, "--max-cost", "0.001", "--prices", str(prices), "--max-attempts", "1",
               "--retry-passes", "0")
    assert "cannot be enforced" not in done.output
    assert (tmp_path / "out" / "run.db").exists()


def test_a_bad_prices_file_names_the_file_and_the_entry(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-5: {input: cheap, output: 10.0}\n", encoding="utf-8")
    done = run(tmp_path, PIPELINE.replace("openai:gpt-5", "sim"), "--prices", str(prices))
    assert done.exit_code == 2, done.output
    assert str(prices) in done.output and "'gpt-5'" in done.output and "input" in done.output
    assert "Traceback" not in done.output


def test_the_pipelines_own_prices_win_over_the_shared_file(tmp_path: Path) -> None:
    from chainfleet.chain.context import run_prices
    from chainfleet.config import RunSettings
    from chainfleet.pipeline import Pipeline

    (tmp_path / "p.yaml").write_text(
        PIPELINE + "prices:\n  openai:gpt-5: {input: 2.0, output: 20.0}\n", encoding="utf-8"
    )
    pipeline = Pipeline.from_yaml(tmp_path / "p.yaml")
    shared = {"openai:gpt-5": (1.0, 1.0), "gpt-9": (3.0, 4.0)}
    prices = run_prices(pipeline, RunSettings(prices=shared))
    assert price_for("openai:gpt-5", prices) == Price(2.0, 20.0)
    assert price_for("openai:gpt-9", prices) == Price(3.0, 4.0)


@pytest.mark.parametrize("model", ["smi", "Sim", "sims"])
def test_model_smi_suggests_sim(tmp_path: Path, model: str) -> None:
    done = run(tmp_path, PIPELINE.replace("openai:gpt-5", "sim"), "--model", model)
    assert done.exit_code == 2, done.output
    assert "did you mean 'sim'?" in done.output and "openai:" not in done.output
