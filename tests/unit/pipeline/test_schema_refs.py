"""An output schema's ``$ref`` is checked when the pipeline loads: local, pointing somewhere, and
not a loop that never ends; a reference to a URL or a file is refused (it is never fetched)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet import Pipeline, PipelineError
from chainfleet.cli import cli


def load_error(output: Any) -> str:
    with pytest.raises(PipelineError) as caught:
        Pipeline.from_dict({"input": "topic", "stages": [{"name": "a", "prompt": "x", "output": output}]})
    message = str(caught.value)
    assert "\n" not in message and "field 'output'" in message, message
    return message


def test_a_ref_to_nothing_is_refused_at_load() -> None:
    schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/nope"}}}
    assert "$ref '#/$defs/nope' (at #/properties/x) points to nothing" in load_error(schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"type": "object", "allOf": [{"$ref": "#"}]},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
    ],
)
def test_a_ref_loop_that_never_ends_is_refused_at_load(schema: dict[str, Any]) -> None:
    assert "a loop that never ends" in load_error(schema)


@pytest.mark.parametrize(
    "ref", ["http://127.0.0.1:9/s.json", "file:///etc/hostname", "other.json", "https://json-schema.org/x"]
)
def test_a_ref_outside_the_schema_is_refused_at_load(ref: str) -> None:
    message = load_error({"type": "object", "properties": {"x": {"$ref": ref}}})
    assert f"$ref {ref!r} (at #/properties/x) is not allowed" in message


def test_a_schema_file_with_a_remote_ref_is_refused_by_the_cli_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"$ref": "file:///etc/hostname"}), encoding="utf-8")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "model: sim\ninput: topic\nstages:\n  - name: a\n    prompt: 'on {{ topic }}'\n"
        "    output: {schema_file: s.json}\n",
        encoding="utf-8",
    )
    topics = tmp_path / "topics.txt"
    topics.write_text("bees\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["run", str(pipeline), "--input", str(topics), "-o", str(tmp_path / "o")]
    )
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "p.yaml:6: stage 'a' (stages[0]), field 'output'" in lines[0]
    assert "$ref 'file:///etc/hostname'" in lines[0] and "is not allowed" in lines[0]


def test_local_refs_and_recursion_through_a_property_still_work() -> None:
    schema = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "type": "object",
        "properties": {"tree": {"$ref": "#/$defs/node"}, "name": {"type": "string"}},
        "required": ["tree", "name"],
    }
    pipeline = Pipeline.from_dict(
        {"input": "topic", "stages": [{"name": "a", "prompt": "x", "output": schema}]}
    )
    contract = pipeline.stages[0].contract
    assert contract is not None
    assert contract.problem({"tree": {"kids": [{"kids": []}]}, "name": "n"}) is None
    assert "kids" in (contract.problem({"tree": {"kids": [{"kids": 5}]}, "name": "n"}) or "")
