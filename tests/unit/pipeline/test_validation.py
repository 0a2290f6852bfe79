"""Validation reports every problem it can find in one go, each on one line, then exit 2.

- a pipeline with three schema and template mistakes prints three lines;
- three whole-pipeline mistakes (a duplicate name, a stage using itself, an unknown provider)
  print three lines too;
- an input file with 25 bad lines prints the first 20 and "and 5 more";
- every template variable no input field provides is named, each on its line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet.cli import cli
from chainfleet.errors import InputError, PipelineError
from chainfleet.inputs import open_input
from chainfleet.pipeline import Pipeline

THREE_MISTAKES = """\
name: three
model: sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}."
    max_tokkens: 100
  - name: write
    prompt: "Write {{ research }"
  - name: edit
    prompt: "Edit {{ write }}"
    temperature: hot
"""

WHOLE_PIPELINE_MISTAKES = """\
name: three
model: sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}."
  - name: research
    prompt: "Write {{ research }}"
  - name: edit
    model: nosuch:thing
    prompt: "Edit {{ topic }}"
"""


def run_cli(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, [line for line in result.stderr.splitlines() if line.strip()]


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_three_mistakes_print_three_lines_and_exit_2(tmp_path: Path) -> None:
    pipeline = write(tmp_path, "three.yaml", THREE_MISTAKES)
    topics = write(tmp_path, "topics.txt", "tea\n")
    code, lines = run_cli("run", pipeline, "-i", topics, "-o", str(tmp_path / "out"))
    assert code == 2
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"error: {pipeline}:7: stage 'research'") and "max_tokkens" in lines[0]
    assert f"{pipeline}:9: stage 'write'" in lines[1] and "template syntax error" in lines[1]
    assert f"{pipeline}:12: stage 'edit'" in lines[2] and "temperature" in lines[2]
    assert not (tmp_path / "out").exists()  # nothing was run


def test_whole_pipeline_mistakes_are_all_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "whole.yaml", WHOLE_PIPELINE_MISTAKES)
    with pytest.raises(PipelineError) as caught:
        Pipeline.from_yaml(path)
    lines = caught.value.lines()
    assert len(lines) == 3, lines
    assert "duplicate stage name 'research'" in lines[0]
    assert "which is itself" in lines[1]
    assert "unknown model provider 'nosuch'" in lines[2]
    assert str(caught.value) == "\n".join(lines)


def test_25_bad_input_lines_print_20_and_5_more(tmp_path: Path) -> None:
    pipeline = write(
        tmp_path,
        "p.yaml",
        'name: p\nmodel: sim\ninput: topic\nstages:\n  - name: a\n    prompt: "{{ topic }}"\n',
    )
    good = '{"topic": "tea"}\n'
    rows = [good] + ["{not json\n" if i % 2 else '["a list"]\n' for i in range(25)] + [good]
    inputs = write(tmp_path, "rows.jsonl", "".join(rows))
    code, lines = run_cli("run", pipeline, "-i", inputs, "-o", str(tmp_path / "out"))
    assert code == 2
    assert len(lines) == 21, lines
    assert lines[:2] == [
        f"error: {inputs}:2: expected a JSON object, got an array",
        f"error: {inputs}:3: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
    ]
    assert lines[19].startswith(f"error: {inputs}:21:")
    assert lines[20] == "error: and 5 more"


def test_scan_lists_missing_fields_and_duplicate_ids_together(tmp_path: Path) -> None:
    inputs = write(
        tmp_path,
        "rows.jsonl",
        '{"id": "a", "topic": "x"}\n{"id": "b"}\n{"id": "a", "topic": "y"}\n{"id": "c", "topic": "z"}\n',
    )
    with pytest.raises(InputError) as caught:
        open_input(inputs).scan(required=["topic"])
    lines = caught.value.lines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{inputs}:2: ") and "'topic'" in lines[0]
    assert lines[1].startswith(f"{inputs}:3: duplicate id 'a'")


def test_every_template_variable_no_field_provides_is_named(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(
        {
            "name": "p",
            "model": "sim",
            "input": "topic",
            "stages": [
                {"name": "a", "prompt": "{{ topic }} {{ audience }}"},
                {"name": "b", "prompt": "{{ a }} {{ tone }}"},
            ],
        }
    )
    with pytest.raises(PipelineError) as caught:
        pipeline.check_fields({"topic"}, input_name="rows.csv")
    lines = caught.value.lines()
    assert len(lines) == 2, lines
    assert "{{ audience }}" in lines[0] and "stage 'a'" in lines[0]
    assert "{{ tone }}" in lines[1] and "stage 'b'" in lines[1]


TYPOS_OF_EVERY_KIND = """\
name: typos
concurency: 3
input: topic
stages:
  - name: research
    promt: "Research {{ topic }}"
  - name: write
    prompt: "Write on {{ topic }} from {{ research }} and {{ edit }}"
    max_tokens: -5
  - name: edit
    prompt: "Edit {{ wirte }}"
    temperature: hot
"""


def test_keys_values_and_template_typos_are_all_named_in_one_run(tmp_path: Path) -> None:
    # a misspelt top-level key and a misspelt stage key were named first, the template typo
    # only in a second run once those were fixed
    path = tmp_path / "typos.yaml"
    path.write_text(TYPOS_OF_EVERY_KIND, encoding="utf-8")
    topics = tmp_path / "topics.txt"
    topics.write_text("bees\n", encoding="utf-8")

    result = CliRunner().invoke(cli, ["run", str(path), "-i", str(topics), "--out", str(tmp_path / "out")])

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    expected = {
        f"{path}:2: field 'concurency': unknown key (did you mean 'concurrency'?)",
        f"{path}:6: stage 'research' (stages[0]), field 'promt': unknown key (did you mean 'prompt'?)",
        f"{path}:9: stage 'write' (stages[1]), field 'max_tokens': Input should be greater",
        f"{path}:12: stage 'edit' (stages[2]), field 'temperature': Input should be a valid number",
        f"{path}:8: stage 'write' (stages[1]), field 'prompt': uses {{{{ edit }}}}, which is a later stage",
        f"{path}:11: stage 'edit' (stages[2]), field 'prompt': uses {{{{ wirte }}}}, which is neither",
    }
    for start in expected:
        assert any(line.startswith(f"error: {start}") for line in lines), (start, lines)
    assert len(lines) == len(expected), lines
    assert "did you mean {{ write }}?" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing ran
