"""Output contracts: schemas checked at load, structured outputs between stages, repairs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from chainfleet import Pipeline, PipelineError, Stage, run
from chainfleet.pipeline.contracts import Contract, parse_reply, strict_schema
from chainfleet.sim.jsonvalue import generate
from conftest import read_report, read_results

RESEARCH = {
    "type": "object",
    "properties": {
        "facts": {"type": "array", "items": {"type": "string"}, "minItems": 3},
        "sources": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "url": {"type": "string", "format": "uri"}},
                "required": ["title", "url"],
            },
        },
        "open_questions": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["facts", "sources"],
}


def content(**sim: Any) -> dict[str, Any]:
    return {
        "input": "topic",
        "sim": {"latency": 0, **sim},
        "stages": [
            {"name": "research", "prompt": "Research {{ topic }}", "output": RESEARCH},
            {
                "name": "write",
                "prompt": "Write on {{ topic }} from:\n{{ research.facts | join('\\n') }}\n"
                "Source: {{ research.sources[0].url }}",
            },
        ],
    }


def test_a_structured_output_is_an_object_in_later_templates_and_json_in_results(tmp_path: Path) -> None:
    report = run(Pipeline.from_dict(content()), ["urban beekeeping", "tea"], out=tmp_path)
    assert report.exit_code == 0
    for record in read_results(tmp_path):
        research = record["outputs"]["research"]
        assert isinstance(research, dict) and len(research["facts"]) >= 3
        assert Contract.from_value(RESEARCH).problem(research) is None
        assert research["sources"][0]["url"].startswith("https://")
        assert record["gates"]["research"] == {"revisions": 0, "repairs": 0}
    item = (tmp_path / "items").glob("*.md")
    assert any('"facts"' in p.read_text(encoding="utf-8") for p in item)


def test_sim_json_is_valid_and_deterministic_in_seed_prompt_and_schema() -> None:
    one = generate(RESEARCH, prompt="Research bees", seed=1)
    assert one == generate(RESEARCH, prompt="Research bees", seed=1)
    assert one != generate(RESEARCH, prompt="Research tea", seed=1)
    assert one != generate(RESEARCH, prompt="Research bees", seed=2)
    assert Contract.from_value(RESEARCH).problem(one) is None


def test_invalid_replies_are_repaired_and_each_repair_is_a_counted_call(tmp_path: Path) -> None:
    topics = [f"topic number {i}" for i in range(12)]
    data = content(invalid_output_rate=0.3)
    data["stages"][0]["max_repairs"] = 4
    report = run(Pipeline.from_dict(data), topics, out=tmp_path)
    assert report.exit_code == 0
    records = read_results(tmp_path)
    repairs = sum(r["gates"]["research"]["repairs"] for r in records)
    assert repairs >= 2  # about a third of the replies are broken: a repair each, some two
    assert all(Contract.from_value(RESEARCH).problem(r["outputs"]["research"]) is None for r in records)
    # every repair is a call: research 12 + repairs, write 12
    assert report.calls["total"] == 24 + repairs
    assert read_report(tmp_path)["gates"]["repairs"] == {"research": repairs}


def test_after_max_repairs_the_item_fails_with_invalid_output_naming_the_problem(tmp_path: Path) -> None:
    data = content(invalid_output_rate=1.0)
    data["stages"][0]["max_repairs"] = 1
    report = run(Pipeline.from_dict(data), ["bees"], out=tmp_path, retry_passes=0)
    assert report.exit_code == 1
    error = read_results(tmp_path)[0]["error"]
    assert error["type"] == "invalid_output" and error["stage"] == "research"
    assert error["message"].startswith("output does not match the schema after 1 repair: ")
    assert any(part in error["message"] for part in ("field 'facts'", "the output", "not JSON"))
    assert report.calls["total"] == 2


def test_a_validation_message_names_the_field() -> None:
    contract = Contract.from_value(RESEARCH)
    bad = {"facts": ["a", "b", "c"], "sources": [{"title": "t"}]}
    assert contract.check(json.dumps(bad)) == (None, "field 'sources[0]': 'url' is a required property")
    assert contract.check("no json")[1] == "the reply is not JSON (no JSON object in it)"


def test_a_reply_in_a_fenced_block_or_after_prose_parses() -> None:
    assert parse_reply('Sure! Here it is:\n```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_reply('The answer is {"a": [1, 2]} as asked.') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        parse_reply("nothing here")


class Facts(BaseModel):
    facts: list[str]
    confidence: float


def test_a_pydantic_model_class_is_a_contract_validated_by_its_type_adapter(tmp_path: Path) -> None:
    stage = Stage(name="research", prompt="Research {{ topic }}", output=Facts)
    assert stage.contract is not None and stage.contract.schema["required"] == ["facts", "confidence"]
    assert stage.contract.problem({"facts": ["a"], "confidence": "high"}) == (
        "field 'confidence': Input should be a valid number, unable to parse string as a number"
    )
    pipeline = Pipeline(input="topic", sim={"latency": 0}, stages=[stage])
    run(pipeline, ["bees"], out=tmp_path)
    assert Facts.model_validate(read_results(tmp_path)[0]["outputs"]["research"])


def test_strict_mode_closes_objects_and_makes_optional_properties_nullable() -> None:
    adapted = strict_schema(RESEARCH)
    assert adapted["additionalProperties"] is False
    assert adapted["required"] == ["facts", "sources", "open_questions"]
    assert adapted["properties"]["open_questions"]["type"] == ["array", "null"]
    assert adapted["properties"]["sources"]["items"]["additionalProperties"] is False
    # a null for an optional property (what strict mode sends) counts as absent
    contract = Contract.from_value(RESEARCH)
    reply = {"facts": ["a", "b", "c"], "sources": [], "open_questions": None}
    assert contract.check(json.dumps(reply)) == ({"facts": ["a", "b", "c"], "sources": []}, None)


def test_a_schema_strict_mode_cannot_express_is_refused_for_openai_naming_the_keyword(tmp_path: Path) -> None:
    schema = {"type": "object", "patternProperties": {"^x": {"type": "string"}}}
    data = {"model": "openai:gpt-4o-mini", "stages": [{"name": "a", "prompt": "hi", "output": schema}]}
    expected = r"field 'output'.*strict mode cannot express 'patternProperties'"
    with pytest.raises(PipelineError, match=expected):
        Pipeline.from_dict(data)


def load(tmp_path: Path, text: str) -> Pipeline:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return Pipeline.from_yaml(path)


def test_a_template_reading_a_property_the_schema_lacks_is_exit_2_with_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "research.json").write_text(json.dumps(RESEARCH), encoding="utf-8")
    text = """\
        input: topic
        stages:
          - name: research
            prompt: "Research {{ topic }}"
            output: {schema_file: schemas/research.json}
          - name: write
            prompt: "Write from {{ research.fact | join(', ') }}"
        """
    with pytest.raises(PipelineError) as info:
        load(tmp_path, text)
    assert str(info.value) == (
        f"{tmp_path / 'p.yaml'}:7: stage 'write' (stages[1]), field 'prompt': reads research.fact, but "
        "the output schema of stage 'research' has no property 'fact' (it has: facts, sources, "
        "open_questions); did you mean {{ research.facts }}?"
    )
    nested = text.replace("research.fact |", "research.sources[0].link |")
    with pytest.raises(PipelineError, match=r"has no property 'link' \(it has: title, url\)"):
        load(tmp_path, nested)
    assert load(tmp_path, text.replace("research.fact |", "research.facts |"))


@pytest.mark.parametrize(
    ("output", "says"),
    [
        ("{schema_file: missing.json}", "schema file 'SCHEMA' does not exist"),
        ("{type: objct}", "not a valid JSON Schema (at type: 'objct' is not valid under any of the given"),
        ("{schema_file: bad.json}", "not a valid JSON Schema in SCHEMA (at properties/facts/minItems:"),
    ],
)
def test_a_bad_schema_is_one_line_naming_file_line_stage_and_field(
    tmp_path: Path, output: str, says: str
) -> None:
    (tmp_path / "bad.json").write_text('{"properties": {"facts": {"minItems": -1}}}', encoding="utf-8")
    text = f"""\
        stages:
          - name: research
            prompt: "Research {{{{ input }}}}"
            output: {output}
        """
    with pytest.raises(PipelineError) as info:
        load(tmp_path, text)
    name = "missing.json" if "missing" in output else "bad.json"
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'p.yaml'}:4: stage 'research' (stages[0]), field 'output': ")
    assert says.replace("SCHEMA", str(tmp_path / name)) in message
