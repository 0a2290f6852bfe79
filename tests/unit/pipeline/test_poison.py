"""Poison inputs and pipelines: every one is a clear error naming its file and line (or is
carried safely), never a crash, a hang, a flood of output, or a template that escapes its
sandbox. (Those that need the real console script: tests/e2e/test_poison.py.)"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from chainfleet import InputError, Pipeline, PipelineError, run
from chainfleet.inputs import open_input
from chainfleet.inputs.lines import MAX_DEPTH, MAX_INT_DIGITS
from chainfleet.providers import Completion, CompletionRequest, Provider

SIM = "name: t\nmodel: sim\nsim: {latency: 0}\ninput: topic\n"


def scan_error(tmp_path: Path, line: str) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text('{"topic": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        open_input(path, input_field="topic").scan()
    return str(caught.value)


def test_a_huge_integer_is_a_clear_error_naming_the_line(tmp_path: Path) -> None:
    message = scan_error(tmp_path, '{"topic": "x", "n": ' + "9" * 5000 + "}")
    assert message.startswith(f"{tmp_path / 'in.jsonl'}:2: ")
    assert f"an integer of 5,000 digits (at most {MAX_INT_DIGITS:,})" in message


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1200, 100_000])
def test_deep_nesting_is_a_clear_error_naming_the_line(tmp_path: Path, depth: int) -> None:
    message = scan_error(tmp_path, '{"topic": "x", "n": ' + "[" * depth + "]" * depth + "}")
    assert message.endswith(f":2: not accepted: nested more than {MAX_DEPTH} levels deep")


def test_a_line_past_the_size_limit_is_refused_without_reading_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("chainfleet.inputs.lines.MAX_LINE_BYTES", 1024 * 1024)
    message = scan_error(tmp_path, '{"topic": "' + "x" * (2 * 1024 * 1024) + '"}')
    assert message.endswith(":2: not accepted: a line longer than 1 MiB")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(PipelineError) as caught:
        Pipeline.from_yaml(write(tmp_path, text))
    return str(caught.value)


@pytest.mark.parametrize("stages", ["5", "'five'", "{name: a}", "null"])
def test_stages_that_are_not_a_list_are_one_clear_error(tmp_path: Path, stages: str) -> None:
    message = load_error(tmp_path, SIM + f"stages: {stages}\n")
    assert message.startswith(f"{tmp_path / 'p.yaml'}:")
    assert "stages" in message


@pytest.mark.parametrize("depth", [65, 500, 5000])
def test_deeply_nested_yaml_is_refused_with_its_line(tmp_path: Path, depth: int) -> None:
    message = load_error(tmp_path, SIM + "deep: " + "[" * depth + "]" * depth + "\n")
    assert "nested more than 64 levels deep" in message
    assert message.startswith(f"{tmp_path / 'p.yaml'}:5: ")


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_billion_laughs_pipeline_is_refused_at_once_in_one_short_line(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        message = load_error(tmp_path, BILLION_LAUGHS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # it stops counting early: expanded, the aliases are 9^8 values, hundreds of MB (it was a
    # bound of 5 CPU seconds, a timed assertion)
    assert peak < 20_000_000
    assert "more than 100,000 values once its aliases are expanded" in message
    assert len(message) < 300
    few = "a: &a [1, 2]\nb: [" + ", ".join(["*a"] * 101) + "]\n"
    assert "more than 100 aliases" in load_error(tmp_path, few)


def test_error_messages_clip_long_values(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, SIM + "concurrency: '" + "x" * 10_000 + "'\nstages: [{name: a, prompt: hi}]\n"
    )
    assert "more characters)" in message and len(message) < 600


def test_the_sandbox_also_refuses_at_render_what_slips_past_the_load_check(tmp_path: Path) -> None:
    # no private name in the source: the attribute is computed, so only the sandbox can see it
    prompt = "{{ (cycler|attr('_' ~ '_init_' ~ '_')) }} {{ topic }}"
    pipeline = Pipeline.model_validate(
        {"model": "sim", "sim": {"latency": 0}, "input": "topic", "stages": [{"name": "a", "prompt": prompt}]}
    )
    report = run(pipeline, ["x"])
    [result] = report.results()
    assert result.status == "failed"
    assert "the sandbox refused it" in (result.error or {}).get("message", "")


class Echo(Provider):
    """Answers with the prompt it was sent."""

    kind = "sim"

    async def complete(self, request: CompletionRequest) -> Completion:
        return Completion(text=request.prompt, input_tokens=1, output_tokens=1)


def test_input_data_and_model_outputs_are_never_rendered_as_templates() -> None:
    pipeline = Pipeline.model_validate(
        {
            "input": "topic",
            "stages": [
                {"name": "a", "prompt": "T={{ topic }}"},
                {"name": "b", "prompt": "A={{ a }} {{ '{{ 6 * 6 }}' }}"},
                {"name": "c", "prompt": "B={{ b }}"},
            ],
        }
    )
    topic = "{{ 7 * 7 }} {% for x in range(3) %}x{% endfor %}"
    report = run(pipeline, [topic], providers={"sim": Echo()})
    [result] = report.results()
    assert result.status == "succeeded", result.error
    assert result.outputs["a"] == f"T={topic}"
    assert result.outputs["c"] == f"B=A=T={topic} {{{{ 6 * 6 }}}}"  # b's output: literal braces
    assert "49" not in result.outputs["c"] and "36" not in result.outputs["c"]


def test_a_pipeline_may_opt_out_of_the_sandbox() -> None:
    stages = [{"name": "a", "prompt": "{{ cycler.__init__.__name__ }} {{ topic }}"}]
    with pytest.raises(PipelineError, match="sandbox refuses"):
        Pipeline.model_validate({"input": "topic", "stages": stages})
    trusted = Pipeline.model_validate({"input": "topic", "sandbox": False, "stages": stages})
    [result] = run(trusted, ["x"], providers={"sim": Echo()}).results()
    assert result.outputs["a"] == "__init__ x"
