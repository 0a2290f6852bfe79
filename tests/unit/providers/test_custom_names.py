"""A provider handed to a run from Python under a name of the user's own: the pipeline names it
(``model: agent:planner``), no file or registry could know it, and the run uses it. A name the
run was not given is still refused before any call, naming the file's line."""

from __future__ import annotations

from pathlib import Path

import pytest

import chainfleet
from chainfleet.errors import PipelineError
from chainfleet.providers import Completion, CompletionRequest, Provider


class Planner(Provider):
    def __init__(self) -> None:
        self.models: list[str] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        self.models.append(request.model)
        return Completion(text=f"plan for {request.prompt}", input_tokens=3, output_tokens=4)


PIPELINE = """\
model: agent:planner
input: topic
stages:
  - name: plan
    prompt: "{{ topic }}"
"""


def test_a_provider_name_of_your_own_works_from_python(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    planner = Planner()
    report = chainfleet.run(
        chainfleet.Pipeline.from_yaml(path, providers=["agent"]),
        ["bees", "ants"],
        out=tmp_path / "out",
        providers={"agent": planner},
    )
    assert report.exit_code == 0
    assert sorted(r.outputs["plan"] for r in report.results()) == ["plan for ants", "plan for bees"]
    assert planner.models == ["planner", "planner"]


def test_a_pipeline_built_in_python_may_name_it_too(tmp_path: Path) -> None:
    pipeline = chainfleet.Pipeline(
        model="agent:planner", input="topic", stages=[{"name": "plan", "prompt": "{{ topic }}"}]
    )  # type: ignore[list-item]
    planner = Planner()
    report = chainfleet.run(pipeline, ["bees"], out=tmp_path / "out", providers={"agent": planner})
    assert report.exit_code == 0 and planner.models == ["planner"]


def test_a_provider_name_the_run_was_not_given_is_refused_before_any_call(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    with pytest.raises(PipelineError) as caught:
        chainfleet.Pipeline.from_yaml(path)  # what `chainfleet run` does: no provider of its own
    assert str(caught.value).startswith(f"{path}:1: field 'model': unknown model provider 'agent'")
    planner = Planner()
    pipeline = chainfleet.Pipeline.from_yaml(path, providers=["agent"])
    with pytest.raises(PipelineError) as caught:
        chainfleet.run(pipeline, ["bees"], out=tmp_path / "out", providers={"agnet": planner})
    assert str(caught.value).startswith(f"{path}:1: field 'model': unknown model provider 'agent'")
    assert planner.models == []


def test_an_unknown_provider_is_said_with_the_other_problems_of_a_file() -> None:
    data = {
        "model": "agent:x",
        "input": "topic",
        "stages": [{"name": "a", "prompt": "{{ b }}"}, {"name": "b", "prompt": "x"}],
    }
    with pytest.raises(PipelineError) as caught:
        chainfleet.Pipeline.from_dict(data)
    lines = caught.value.lines()
    assert any("unknown model provider 'agent'" in line for line in lines), lines
    assert any("a later stage" in line for line in lines), lines
