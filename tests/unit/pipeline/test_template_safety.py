"""Every template of a pipeline compiles one way (pipeline/templates.py): the same load checks
for a prompt, a judge's rubric, a must_include term or a ``when:``; no template can read a file;
and a template that fails while rendering fails that item only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet import Pipeline, PipelineError, run
from chainfleet.cli import cli

HEAD = (
    "name: t\nmodel: sim\nsim: {latency: 0}\ninput: topic\n"
    "stages:\n  - name: a\n    prompt: 'on {{ topic }}'\n"
)
ESCAPE = "{{ cycler.__init__.__globals__ }}"


def chainfleet_run(tmp_path: Path, pipeline_text: str) -> tuple[int, list[str]]:
    """``chainfleet run`` in-process: its exit code and the lines it printed."""
    path = tmp_path / "p.yaml"
    path.write_text(pipeline_text, encoding="utf-8")
    topics = tmp_path / "topics.txt"
    topics.write_text("bees\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(path), "--input", str(topics), "-o", str(tmp_path / "out")])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output.strip().splitlines()


@pytest.mark.parametrize(
    ("gate", "line", "field"),
    [
        (f'    gate:\n      - judge: {{rubric: "{ESCAPE}"}}\n', 9, "gate.0.judge.rubric"),
        (
            f'    gate:\n      - min_words: 1\n      - must_include: ["x", "{ESCAPE}"]\n',
            10,
            "gate.1.must_include.1",
        ),
        (f'    gate:\n      - must_not_include: "{ESCAPE}"\n', 9, "gate.0.must_not_include.0"),
        ("    gate:\n      - when: \"output.__class__ == 'x'\"\n", 9, "gate.0.when"),
    ],
)
def test_a_gate_template_leaving_the_sandbox_is_refused_at_load_like_a_prompt(
    tmp_path: Path, gate: str, line: int, field: str
) -> None:
    code, lines = chainfleet_run(tmp_path, HEAD + gate)
    assert code == 2
    assert len(lines) == 1, lines
    assert f"p.yaml:{line}: stage 'a' (stages[0]), field '{field}'" in lines[0]
    assert "which the template sandbox refuses" in lines[0]


@pytest.mark.parametrize(
    ("tag", "said"),
    [
        ("{% include 'secrets.txt' %}", "{% include %}"),
        ("{% extends 'base.txt' %}", "{% extends %}"),
        ("{% import 'macros.txt' as m %}", "{% import %}"),
        ("{% from 'macros.txt' import m %}", "{% from ... import %}"),
    ],
)
def test_a_template_that_loads_another_file_is_refused_at_load(tmp_path: Path, tag: str, said: str) -> None:
    (tmp_path / "secrets.txt").write_text("secret\n", encoding="utf-8")
    text = HEAD.replace("'on {{ topic }}'", f'"on {{{{ topic }}}} {tag}"')
    code, lines = chainfleet_run(tmp_path, text)
    assert code == 2 and len(lines) == 1, lines
    assert "p.yaml:7: stage 'a' (stages[0]), field 'prompt'" in lines[0]
    assert said in lines[0] and "templates cannot read other files" in lines[0]


@pytest.mark.parametrize(
    "gate",
    [
        [{"must_include": ["{% include 'x' %}"]}],
        [{"judge": {"rubric": "good {% extends 'x' %}"}}],
    ],
)
def test_a_gate_template_that_loads_a_file_is_refused_naming_its_field(gate: list[Any]) -> None:
    with pytest.raises(PipelineError, match="templates cannot read other files") as caught:
        Pipeline.from_dict({"input": "topic", "stages": [{"name": "a", "prompt": "x", "gate": gate}]})
    assert "field 'gate.0." in str(caught.value)


def test_sandbox_false_trusts_the_gate_templates_too() -> None:
    stage = {
        "name": "a",
        "prompt": "{{ topic }}",
        "gate": [{"must_include": ["{{ topic.__class__.__name__ }}"]}],
    }
    with pytest.raises(PipelineError, match="sandbox refuses"):
        Pipeline.from_dict({"input": "topic", "stages": [stage]})
    trusted = Pipeline.from_dict({"input": "topic", "sandbox": False, "model": "sim", "stages": [stage]})
    [result] = run(trusted, ["str"]).results()
    assert result.status == "succeeded", result.error


SIM: dict[str, Any] = {"model": "sim", "sim": {"latency": 0}, "input": "topic"}
#: divides by zero for a topic of three letters only
BY_ZERO = "{{ 12 // (topic|length - 3) }}"


@pytest.mark.parametrize(
    ("stage", "field"),
    [
        ({"prompt": f"on {{{{ topic }}}} {BY_ZERO}"}, "prompt"),
        ({"prompt": "on {{ topic }}", "system": f"be brief {BY_ZERO}"}, "system"),
        (
            {"prompt": "on {{ topic }}", "gate": [{"must_not_include": [f"zz{BY_ZERO}zz"]}]},
            "must_not_include[0]",
        ),
        (
            {"prompt": "on {{ topic }}", "gate": [{"judge": {"rubric": f"good {BY_ZERO}", "threshold": 0}}]},
            "rubric",
        ),
    ],
)
def test_a_template_failing_while_it_renders_fails_only_that_item(stage: dict[str, Any], field: str) -> None:
    pipeline = Pipeline.from_dict({**SIM, "stages": [{"name": "a", **stage}]})
    report = run(pipeline, ["bees", "ant", "wasps"])
    status = {r.input["topic"]: r.status for r in report.results()}
    assert status == {"bees": "succeeded", "ant": "failed", "wasps": "succeeded"}
    [failed] = [r for r in report.results() if r.status == "failed"]
    message = (failed.error or {}).get("message", "")
    assert field in message and "ZeroDivisionError" in message, message
    assert report.exit_code == 1
