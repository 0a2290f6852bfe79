"""The ``routes:`` block: a route's name stands wherever a model is named, and every mistake in
one is an exit-2 line naming the file, its line and the field, before any call.

- a route with a spill policy, three targets (two keys of one provider and a bare model
  string) loads; a stage, the pipeline and ``--model`` may name it;
- an unknown target provider, a route named like a provider, an empty route, bad weights (too
  few, all zero, or given to another policy) and a split without weights are each refused;
- a route target's missing key variable is refused before any call, naming the variable.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet.cli import cli
from chainfleet.errors import PipelineError
from chainfleet.pipeline import Pipeline

GOOD = """\
model: fast
routes:
  fast:
    policy: spill
    spill_after: 0.5
    targets:
      - model: openai:gpt-4o-mini
        api_key_env: KEY_A
      - model: openai:gpt-4o-mini
        api_key_env: KEY_B
        rpm: 500
      - anthropic:claude-haiku-4-5
  cheap:
    policy: split
    weights: [3, 1]
    targets: [sim, sim]
stages:
  - name: a
    prompt: "{{ input }}"
  - name: b
    model: cheap
    prompt: "{{ a }}"
"""
SPLIT = "  fast:\n    policy: split\n"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def run_cli(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()]


def test_a_route_loads_and_stands_for_a_model(tmp_path: Path) -> None:
    pipeline = Pipeline.from_yaml(write(tmp_path, GOOD))
    fast = pipeline.routes["fast"]
    assert fast.policy == "spill" and fast.spill_after == 0.5 and fast.pin == "item"
    assert [t.model for t in fast.targets][2] == "anthropic:claude-haiku-4-5"
    assert fast.targets[1].rpm == 500
    assert fast.labels() == [
        "openai:gpt-4o-mini (KEY_A)",
        "openai:gpt-4o-mini (KEY_B)",
        "anthropic:claude-haiku-4-5",
    ]
    assert pipeline.targets_of("fast") == ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"]
    assert pipeline.models_used() == ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "sim"]
    assert pipeline.with_model("cheap").model_for(pipeline.stages[0]) == "cheap"


@pytest.mark.parametrize(
    ("routes", "line", "field", "said"),
    [
        ("  fast:\n    targets: [opnai:gpt-4o]\n", 4, "routes.fast.targets.0.model", "did you mean 'openai'"),
        ("  openai:\n    targets: [sim]\n", 3, "routes.openai", "also a provider's name"),
        ("  fast:\n    targets: []\n", 4, "routes.fast.targets", "at least 1"),
        (f"{SPLIT}    weights: [1]\n    targets: [sim, sim]\n", 3, "routes.fast", "1 numbers for 2"),
        (f"{SPLIT}    weights: [0, 0]\n    targets: [sim, sim]\n", 3, "routes.fast", "not all zero"),
        ("  fast:\n    weights: [1, 2]\n    targets: [sim, sim]\n", 3, "routes.fast", "for policy split"),
        ("  fast:\n    policy: split\n    targets: [sim, sim]\n", 3, "routes.fast", "needs weights"),
    ],
)
def test_a_bad_route_is_exit_2_naming_file_line_and_field(
    tmp_path: Path, routes: str, line: int, field: str, said: str
) -> None:
    path = write(tmp_path, "model: sim\nroutes:\n" + routes + "stages:\n  - name: a\n    prompt: x\n")
    with pytest.raises(PipelineError) as caught:
        Pipeline.from_yaml(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: field '{field}'"), message
    assert said in message
    inputs = tmp_path / "in.txt"
    inputs.write_text("tea\n", encoding="utf-8")
    code, lines = run_cli("run", path, "-i", str(inputs), "-o", str(tmp_path / "out"))
    assert code == 2 and lines[0] == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_a_misspelt_route_name_suggests_the_route(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("model: fast\n", "model: fsat\n", 1))
    with pytest.raises(PipelineError, match="did you mean the route 'fast'"):
        Pipeline.from_yaml(path)


def test_a_route_targets_missing_key_is_refused_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEY_A", "sk-test-aaaaaaaaaaaaaaaaaaaaaaaa")
    monkeypatch.delenv("KEY_B", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-bbbbbbbbbbbbbbbbbbbb")
    inputs = tmp_path / "in.txt"
    inputs.write_text("tea\n", encoding="utf-8")
    code, lines = run_cli("run", write(tmp_path, GOOD), "-i", str(inputs), "-o", str(tmp_path / "out"))
    assert code == 2
    assert "KEY_B is not set" in lines[0] and "field 'model'" in lines[0], lines
    assert "sk-test" not in " ".join(lines)


def test_the_routes_example_loads() -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "routes.yaml"
    pipeline = Pipeline.from_yaml(example)
    assert pipeline.routes["fast"].policy == "spill"
    assert pipeline.targets_of("fast") == ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"]


def test_model_flag_names_a_route_and_the_report_shows_its_shares(tmp_path: Path) -> None:
    text = (
        "model: sim\nsim: {latency: 0}\nroutes:\n  cheap:\n    policy: split\n    weights: [3, 1]\n"
        "    targets: [sim, sim]\nstages:\n  - name: a\n    prompt: '{{ input }}'\n"
    )
    inputs = tmp_path / "in.txt"
    inputs.write_text("".join(f"topic {i}\n" for i in range(8)), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["run", write(tmp_path, text), "-i", str(inputs), "-o", str(out), "--model", "cheap"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [t["ok"] for t in report["routes"]["cheap"]["targets"]] == [6, 2]
    assert "route cheap (split): sim (target 1) 6 (75%), sim (target 2) 2 (25%)" in result.output
    code, lines = run_cli(
        "run", write(tmp_path, text), "-i", str(inputs), "-o", str(tmp_path / "o2"), "--model", "chep"
    )
    assert code == 2 and "did you mean the route 'cheap'" in lines[0]
