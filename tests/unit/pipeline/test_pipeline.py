"""Pipelines: loading from YAML, validation before any call, field checks, rendering, tools, gates.

Every invalid pipeline is one ``PipelineError`` (a ``ConfigError``: exit code 2) whose message is
one line naming the file, the YAML line, the stage and the field, then the reason.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from chainfleet.errors import ConfigError, InvalidOutput, InvalidRequest, PipelineError
from chainfleet.pipeline import Pipeline, Stage

# The DESIGN.md example, in full.
CONTENT = """\
name: content
model: sim
sim: {latency: 1.0, jitter: 0.0, error_rate: 0.0, seed: 0}
providers:
  local: {kind: openai, base_url: "http://127.0.0.1:11434/v1", api_key_env: LOCAL_KEY}
limits:
  "openai:gpt-4o-mini": {rpm: 500, tpm: 200000}
concurrency: 5
input: topic
stages:
  - name: research
    system: You are a meticulous research agent.
    prompt: "Research {{ topic }}: the key facts, figures and open questions."
    max_tokens: 800
  - name: write
    prompt: "Write an article on {{ topic }} from these notes:\\n{{ research }}"
  - name: edit
    prompt: "Edit this draft for clarity and accuracy:\\n{{ write }}"
"""

STEPS_MODULE = "cf_test_steps"
STEPS_SOURCE = """\
async def search(context):
    return "found " + context["topic"]


def sync_search(context):
    return "found"


def at_least_three_words(text):
    return None if len(text.split()) >= 3 else "fewer than 3 words"
"""


def write(tmp_path: Path, text: str, name: str = "content.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Pipeline:
    return Pipeline.from_yaml(write(tmp_path, text))


def load_error(
    tmp_path: Path,
    text: str,
    *,
    line: int | None = None,
    stage: str | None = None,
    field: str | None = None,
    says: tuple[str, ...] = (),
) -> str:
    """Load ``text`` expecting a PipelineError; check the one-line message names what it should.

    ``line=None`` checks only that the message starts with the file; the YAML line of the errors
    found after parsing is checked on its own in ``test_errors_found_after_parsing_name_the_yaml_line``.
    """
    path = write(tmp_path, text)
    with pytest.raises(PipelineError) as info:
        Pipeline.from_yaml(path)
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert "\n" not in message, message
    prefix = f"{path}:{line}: " if line is not None else f"{path}"
    assert message.startswith(prefix), message
    if stage is not None:
        assert f"stage {stage!r}" in message, message
    if field is not None:
        assert f"field {field!r}" in message, message
    for part in says:
        assert part in message, message
    return message


@pytest.fixture
def steps_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A tiny importable module of tool steps and gates, named ``cf_test_steps``."""
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / f"{STEPS_MODULE}.py").write_text(STEPS_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, STEPS_MODULE, raising=False)
    yield STEPS_MODULE
    sys.modules.pop(STEPS_MODULE, None)


# -- a valid pipeline ------------------------------------------------------------------------------


def test_the_design_example_loads(tmp_path: Path) -> None:
    pipeline = load(tmp_path, CONTENT)
    assert pipeline.name == "content"
    assert [s.name for s in pipeline.stages] == ["research", "write", "edit"]
    assert [pipeline.model_for(s) for s in pipeline.stages] == ["sim", "sim", "sim"]
    assert [s.max_tokens for s in pipeline.stages] == [800, 1024, 1024]
    assert [s.temperature for s in pipeline.stages] == [0.0, 0.0, 0.0]
    assert pipeline.stages[0].system == "You are a meticulous research agent."
    assert pipeline.stages[1].prompt == "Write an article on {{ topic }} from these notes:\n{{ research }}"
    assert pipeline.concurrency == 5
    assert pipeline.input == "topic"
    assert pipeline.sim.latency == 1.0 and pipeline.sim.error_rate == 0.0
    assert pipeline.providers["local"].kind == "openai"
    assert pipeline.providers["local"].base_url == "http://127.0.0.1:11434/v1"
    assert pipeline.providers["local"].api_key_env == "LOCAL_KEY"
    assert pipeline.limits["openai:gpt-4o-mini"].rpm == 500
    assert pipeline.limits["openai:gpt-4o-mini"].tpm == 200000
    # only the input supplies `topic`; `research` and `write` come from earlier stages
    assert pipeline.input_fields_needed() == {"topic": [("research", "prompt"), ("write", "prompt")]}


def test_a_minimal_pipeline_gets_the_defaults(tmp_path: Path) -> None:
    pipeline = load(
        tmp_path,
        """\
        stages:
          - name: summarize
            prompt: "Summarize {{ input }} (item {{ id }})."
        """,
    )
    assert pipeline.name == "pipeline"
    assert pipeline.model_for(pipeline.stages[0]) == "sim"
    assert pipeline.stages[0].max_tokens == 1024
    assert pipeline.concurrency == 5
    assert pipeline.input == "input"
    assert pipeline.providers == {} and pipeline.limits == {}
    # `id` is always there: it is never asked of the input
    assert pipeline.input_fields_needed() == {"input": [("summarize", "prompt")]}


def test_stage_models_override_the_pipeline_default(tmp_path: Path) -> None:
    pipeline = load(
        tmp_path,
        """\
        model: openai:gpt-4o-mini
        providers:
          local: {kind: openai, base_url: "http://127.0.0.1:11434/v1"}
        stages:
          - name: research
            prompt: "Research {{ input }}"
          - name: write
            model: anthropic:claude-3-5-haiku-latest
            prompt: "Write from {{ research }}"
          - name: edit
            model: "local:llama3"
            prompt: "Edit {{ write }}"
        """,
    )
    assert [pipeline.model_for(s) for s in pipeline.stages] == [
        "openai:gpt-4o-mini",
        "anthropic:claude-3-5-haiku-latest",
        "local:llama3",
    ]


def test_input_fields_needed_lists_every_use_including_system(tmp_path: Path) -> None:
    pipeline = load(
        tmp_path,
        """\
        stages:
          - name: research
            system: "You research for {{ audience }}."
            prompt: "Research {{ topic }}"
          - name: write
            system: "Write for {{ audience }}."
            prompt: "Write on {{ topic }} from {{ research }}"
        """,
    )
    assert pipeline.input_fields_needed() == {
        "audience": [("research", "system"), ("write", "system")],
        "topic": [("research", "prompt"), ("write", "prompt")],
    }


# -- unknown keys ----------------------------------------------------------------------------------


def test_a_misspelt_stage_key_is_named_with_its_line_and_a_hint(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """\
        name: content
        stages:
          - name: research
            promt: "Research {{ topic }}"
        """,
        line=4,
        stage="research",
        field="promt",
        says=("stages[0]", "unknown key", "did you mean 'prompt'?"),
    )
    assert message.endswith("unknown key (did you mean 'prompt'?)")


def test_a_misspelt_top_level_key_is_named_with_its_line_and_a_hint(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """\
        name: content
        concurency: 3
        stages:
          - name: research
            prompt: "Research {{ input }}"
        """,
        line=2,
        field="concurency",
        says=("unknown key", "did you mean 'concurrency'?"),
    )
    assert "stage" not in message


def test_source_is_not_a_key_a_pipeline_file_can_set(tmp_path: Path) -> None:
    # `source` is the loader's own note of where the pipeline came from; in a file it is unknown,
    # like any other key the model does not have
    load_error(
        tmp_path,
        """\
        source: somewhere.yaml
        stages:
          - name: research
            prompt: "Research {{ input }}"
        """,
        line=1,
        field="source",
        says=("unknown key",),
    )


def test_a_key_given_twice_in_a_stage_is_an_error_not_silently_the_last(tmp_path: Path) -> None:
    # YAML requires unique keys; PyYAML keeps the last one, so the first prompt would vanish
    load_error(
        tmp_path,
        """\
        stages:
          - name: research
            prompt: "Research {{ input }} in depth"
            prompt: "Research {{ input }}"
        """,
        line=4,
        says=("prompt",),
    )


# -- stage names and the order of stages -----------------------------------------------------------


def test_duplicate_stage_names_are_rejected(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: draft
            prompt: "Draft {{ input }}"
          - name: draft
            prompt: "Draft again {{ input }}"
        """,
        stage="draft",
        says=("stages[1]", "duplicate stage name 'draft'"),
    )


def test_a_template_naming_a_later_stage_is_rejected(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: write
            prompt: "Write from {{ research }}"
          - name: research
            prompt: "Research {{ input }}"
        """,
        stage="write",
        field="prompt",
        says=("stages[0]", "{{ research }}", "a later stage", "only earlier stages"),
    )


def test_a_stage_naming_itself_is_rejected(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: research
            prompt: "Research {{ input }}"
          - name: edit
            system: "You edit {{ edit }}."
            prompt: "Edit {{ research }}"
        """,
        stage="edit",
        field="system",
        says=("stages[1]", "{{ edit }}", "itself", "only earlier stages"),
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("my-stage", "must be a plain identifier"),
        ("2nd", "must be a plain identifier"),
        ("id", "'id' is reserved"),
    ],
)
def test_a_stage_name_must_be_usable_in_templates(tmp_path: Path, name: str, reason: str) -> None:
    load_error(
        tmp_path,
        f"""\
        stages:
          - name: research
            prompt: "Research {{{{ input }}}}"
          - name: "{name}"
            prompt: "Go on from {{{{ research }}}}"
        """,
        line=4,
        stage=name,
        field="name",
        says=("stages[1]", reason),
    )


def test_a_stage_named_like_the_input_field_is_rejected(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        input: topic
        stages:
          - name: topic
            prompt: "Pick a topic"
        """,
        stage="topic",
        says=("stages[0]", "also the input field's name"),
    )


def test_empty_stages_are_rejected(tmp_path: Path) -> None:
    load_error(tmp_path, "name: content\nstages: []\n", line=2, field="stages")


def test_missing_stages_are_rejected(tmp_path: Path) -> None:
    load_error(tmp_path, "name: content\n", line=1, field="stages", says=("is required",))


# -- templates ------------------------------------------------------------------------------------


def test_a_jinja_syntax_error_names_the_stage_and_field(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: research
            prompt: "Research {{ topic }"
        """,
        line=3,
        stage="research",
        field="prompt",
        says=("template syntax error", "unexpected '}'"),
    )


def test_a_jinja_syntax_error_in_the_system_prompt(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: research
            system: "{% if expert %}You are an expert."
            prompt: "Research {{ input }}"
        """,
        line=3,
        stage="research",
        field="system",
        says=("template syntax error",),
    )


# -- what a stage is -------------------------------------------------------------------------------


def test_a_stage_with_neither_prompt_nor_tool_is_rejected(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: research
            system: "You are a researcher."
        """,
        line=2,
        stage="research",
        says=("stages[0]", "exactly one of 'prompt'", "'tool'"),
    )


def test_a_stage_with_both_prompt_and_tool_is_rejected(tmp_path: Path, steps_module: str) -> None:
    load_error(
        tmp_path,
        f"""\
        stages:
          - name: research
            prompt: "Research {{{{ input }}}}"
            tool: "{steps_module}:search"
        """,
        line=2,
        stage="research",
        says=("stages[0]", "exactly one of 'prompt'", "'tool'"),
    )


def test_a_stage_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    load_error(tmp_path, "stages:\n  - research\n", line=2, says=("stages[0]",))


# -- models and providers --------------------------------------------------------------------------


def test_an_unknown_provider_is_rejected_with_a_hint(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: research
            model: "opneai:gpt-4o"
            prompt: "Research {{ input }}"
        """,
        stage="research",
        field="model",
        says=("unknown model provider 'opneai'", "did you mean 'openai'?", "sim, openai, anthropic"),
    )


def test_a_model_without_a_provider_is_rejected_with_an_example(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: research
            model: gpt-4o
            prompt: "Research {{ input }}"
        """,
        stage="research",
        field="model",
        says=("model 'gpt-4o' has no provider", "PROVIDER:MODEL", "openai:gpt-4o"),
    )


def test_a_bad_default_model_is_rejected(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        model: gpt-4o
        stages:
          - name: research
            prompt: "Research {{ input }}"
        """,
        says=("model 'gpt-4o' has no provider", "openai:gpt-4o"),
    )


def test_a_named_provider_from_the_providers_block_is_accepted(tmp_path: Path) -> None:
    pipeline = load(
        tmp_path,
        """\
        providers:
          local: {kind: openai, base_url: "http://127.0.0.1:11434/v1", api_key_env: LOCAL_KEY}
        stages:
          - name: research
            model: "local:llama3"
            prompt: "Research {{ input }}"
        """,
    )
    assert pipeline.model_for(pipeline.stages[0]) == "local:llama3"


def test_a_named_provider_needs_the_providers_block(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: research
            model: "local:llama3"
            prompt: "Research {{ input }}"
        """,
        stage="research",
        field="model",
        says=("unknown model provider 'local'",),
    )


def test_a_provider_of_an_unknown_kind_is_rejected(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        providers:
          local: {kind: ollama, base_url: "http://127.0.0.1:11434/v1"}
        stages:
          - name: research
            prompt: "Research {{ input }}"
        """,
        line=2,
        field="providers.local.kind",
        says=("'openai'", "'anthropic'"),
    )


# -- settings --------------------------------------------------------------------------------------


def test_sim_settings_out_of_range_are_rejected(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        name: content
        sim:
          latency: 0.5
          error_rate: 2
        stages:
          - name: research
            prompt: "Research {{ input }}"
        """,
        line=4,
        field="sim.error_rate",
        says=("1",),
    )


def test_negative_concurrency_is_rejected(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """\
        concurrency: -1
        stages:
          - name: research
            prompt: "Research {{ input }}"
        """,
        line=1,
        field="concurrency",
    )
    assert "stage" not in message


def test_max_tokens_below_one_is_rejected(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        stages:
          - name: research
            prompt: "Research {{ input }}"
            max_tokens: 0
        """,
        line=4,
        stage="research",
        field="max_tokens",
    )


# -- the file itself -------------------------------------------------------------------------------


def test_invalid_yaml_names_its_line(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        name: content
        stages:
          - name: research
            prompt: "Research {{ input }}"
           model: sim
        """,
        line=5,
        says=("not valid YAML",),
    )


def test_a_tab_in_the_indentation_names_its_line(tmp_path: Path) -> None:
    load_error(tmp_path, "name: content\nstages:\n\t- name: research\n", line=3, says=("not valid YAML",))


def test_a_list_is_not_a_pipeline(tmp_path: Path) -> None:
    load_error(
        tmp_path,
        """\
        - name: research
          prompt: "Research {{ input }}"
        """,
        says=("a pipeline file is a YAML mapping with a 'stages' list",),
    )


def test_an_empty_file_is_not_a_pipeline(tmp_path: Path) -> None:
    load_error(tmp_path, "", says=("a pipeline file is a YAML mapping with a 'stages' list",))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(PipelineError) as info:
        Pipeline.from_yaml(path)
    assert str(info.value) == f"{path}: cannot read the pipeline file: No such file or directory"


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("stages:\n  - name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PipelineError) as info:
        Pipeline.from_yaml(path)
    assert str(info.value) == f"{path}: cannot read the pipeline file: not UTF-8 text"


# -- the YAML line of errors found after parsing ---------------------------------------------------

AFTER_PARSING = {
    "duplicate stage name": (
        """\
        stages:
          - name: draft
            prompt: "Draft {{ input }}"
          - name: draft
            prompt: "Draft again {{ input }}"
        """,
        4,
    ),
    "a later stage": (
        """\
        stages:
          - name: write
            system: "You write."
            prompt: "Write from {{ research }}"
          - name: research
            prompt: "Research {{ input }}"
        """,
        4,
    ),
    "itself": (
        """\
        stages:
          - name: research
            prompt: "Research {{ input }} beyond {{ research }}"
        """,
        3,
    ),
    "unknown model provider": (
        """\
        stages:
          - name: research
            prompt: "Research {{ input }}"
            model: "opneai:gpt-4o"
        """,
        4,
    ),
    "has no provider": (
        """\
        name: content
        model: gpt-4o
        stages:
          - name: research
            prompt: "Research {{ input }}"
        """,
        2,
    ),
    "also the input field's name": (
        """\
        input: topic
        stages:
          - name: research
            prompt: "Research {{ topic }}"
          - name: topic
            prompt: "Pick a topic"
        """,
        5,
    ),
}


@pytest.mark.parametrize("reason", list(AFTER_PARSING))
def test_errors_found_after_parsing_name_the_yaml_line(tmp_path: Path, reason: str) -> None:
    text, line = AFTER_PARSING[reason]
    load_error(tmp_path, text, line=line, says=(reason,))


def test_a_bad_default_model_names_the_top_level_model_key(tmp_path: Path) -> None:
    # the mistake is the top-level `model:`, not a stage: the message should point there
    load_error(
        tmp_path,
        """\
        model: gpt-4o
        stages:
          - name: research
            prompt: "Research {{ input }}"
        """,
        line=1,
        field="model",
        says=("has no provider",),
    )


# -- check_fields ----------------------------------------------------------------------------------


def test_check_fields_names_the_variable_the_fields_and_a_hint() -> None:
    pipeline = Pipeline(
        input="topic",
        stages=[
            Stage(name="research", prompt="Research {{ topc }}."),
            Stage(name="write", prompt="Write on {{ topic }} from {{ research }}"),
        ],
    )
    with pytest.raises(PipelineError) as info:
        pipeline.check_fields(["topic", "audience"], input_name="topics.txt")
    message = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert "\n" not in message
    assert "stage 'research' (stages[0])" in message
    assert "field 'prompt'" in message
    assert "{{ topc }}" in message
    assert "topics.txt (audience, topic)" in message
    assert "did you mean {{ topic }}?" in message


def test_check_fields_hints_at_an_earlier_stage() -> None:
    pipeline = Pipeline(
        input="topic",
        stages=[
            Stage(name="research", prompt="Research {{ topic }}."),
            Stage(name="write", system="Use {{ reserch }}", prompt="Write on {{ topic }}"),
        ],
    )
    with pytest.raises(PipelineError) as info:
        pipeline.check_fields(["topic"])
    message = str(info.value)
    assert "stage 'write' (stages[1])" in message
    assert "field 'system'" in message
    assert "{{ reserch }}" in message
    assert "earlier stage (research)" in message
    assert "did you mean {{ research }}?" in message


def test_check_fields_from_a_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        input: topic
        stages:
          - name: research
            prompt: "Research {{ topc }}"
        """,
    )
    pipeline = Pipeline.from_yaml(path)
    with pytest.raises(PipelineError) as info:
        pipeline.check_fields(["topic"])
    message = str(info.value)
    assert "{{ topc }}" in message and "did you mean {{ topic }}?" in message
    assert message.startswith(f"{path}:4: "), message


def test_check_fields_passes_when_the_fields_cover_the_templates(tmp_path: Path) -> None:
    pipeline = load(tmp_path, CONTENT)
    pipeline.check_fields(["topic"])
    pipeline.check_fields({"topic", "id", "extra"})


def test_check_fields_is_skipped_when_the_fields_are_unknown() -> None:
    pipeline = Pipeline(stages=[Stage(name="research", prompt="Research {{ anything }}")])
    pipeline.check_fields(None)


def test_check_fields_with_no_fields_says_none() -> None:
    pipeline = Pipeline(stages=[Stage(name="research", prompt="Research {{ topic }}")])
    with pytest.raises(PipelineError) as info:
        pipeline.check_fields([])
    assert "(none)" in str(info.value)


# -- rendering -------------------------------------------------------------------------------------


def test_render_returns_system_and_prompt() -> None:
    stage = Stage(
        name="write",
        system="You write for {{ audience }}.",
        prompt="Item {{ id }}: write on {{ topic }} from:\n{{ research }}",
    )
    context = {"id": "7", "topic": "bees", "audience": "children", "research": "Bees make honey."}
    assert stage.render(context) == (
        "You write for children.",
        "Item 7: write on bees from:\nBees make honey.",
    )


def test_render_without_a_system_prompt_gives_none() -> None:
    stage = Stage(name="research", prompt="Research {{ topic }}.")
    assert stage.render({"topic": "bees"}) == (None, "Research bees.")


def test_render_does_not_escape_html() -> None:
    stage = Stage(name="edit", prompt="Edit: {{ draft }}")
    assert stage.render({"draft": "<b>A & B</b>"}) == (None, "Edit: <b>A & B</b>")


@pytest.mark.parametrize(
    "stage",
    [
        Stage(name="research", prompt="Research {{ topic }}."),
        Stage(name="research", system="Expert on {{ topic }}.", prompt="Research."),
    ],
    ids=["prompt", "system"],
)
def test_a_missing_variable_at_render_time_is_an_invalid_request(stage: Stage) -> None:
    with pytest.raises(InvalidRequest) as info:
        stage.render({"id": "1"})
    assert "'topic' is undefined" in str(info.value)
    assert info.value.stage == "research"


# -- tool stages -----------------------------------------------------------------------------------


async def web_search(context: Mapping[str, Any]) -> str:
    return f"results for {context['topic']}"


def test_an_async_function_is_a_tool_stage() -> None:
    search = Stage(name="search", tool=web_search)
    assert search.is_tool
    pipeline = Pipeline(
        input="topic",
        stages=[search, Stage(name="write", prompt="Write on {{ topic }} from {{ search }}")],
    )
    assert pipeline.input_fields_needed() == {"topic": [("write", "prompt")]}
    assert asyncio.run(pipeline.stages[0].tool({"topic": "bees"})) == "results for bees"


def test_an_async_callable_object_is_a_tool_stage() -> None:
    class Search:
        async def __call__(self, context: Mapping[str, Any]) -> str:
            return "found"

    assert Stage(name="search", tool=Search()).is_tool


def test_a_sync_function_is_not_a_tool() -> None:
    def sync_search(context: Mapping[str, Any]) -> str:
        return "found"

    with pytest.raises((ValidationError, PipelineError), match="must be an async function"):
        Stage(name="search", tool=sync_search)


def test_a_tool_named_in_yaml_is_imported(tmp_path: Path, steps_module: str) -> None:
    pipeline = load(
        tmp_path,
        f"""\
        input: topic
        stages:
          - name: search
            tool: "{steps_module}:search"
          - name: write
            prompt: "Write from {{{{ search }}}}"
        """,
    )
    tool = pipeline.stages[0].tool
    assert pipeline.stages[0].is_tool
    assert asyncio.run(tool({"topic": "bees"})) == "found bees"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("cf_no_such_module:search", "cannot import 'cf_no_such_module'"),
        (f"{STEPS_MODULE}:nope", f"module '{STEPS_MODULE}' has no 'nope'"),
        (STEPS_MODULE, "is not 'package.module:function'"),
        (f"{STEPS_MODULE}:sync_search", "must be an async function"),
    ],
    ids=["no-module", "no-function", "no-colon", "sync"],
)
def test_a_bad_tool_path_is_rejected(tmp_path: Path, steps_module: str, spec: str, reason: str) -> None:
    load_error(
        tmp_path,
        f"""\
        stages:
          - name: search
            tool: "{spec}"
        """,
        line=3,
        stage="search",
        field="tool",
        says=(reason,),
    )


# -- quality gates ---------------------------------------------------------------------------------


def at_least_three_words(text: str) -> str | None:
    return None if len(text.split()) >= 3 else "fewer than 3 words"


def test_a_gate_that_returns_a_reason_fails_the_output() -> None:
    stage = Stage(name="write", prompt="Write on {{ topic }}", gate=at_least_three_words)
    with pytest.raises(InvalidOutput) as info:
        stage.check_output("Too short")
    assert "fewer than 3 words" in str(info.value)
    assert info.value.stage == "write"


def test_a_gate_that_returns_none_passes_the_output() -> None:
    stage = Stage(name="write", prompt="Write on {{ topic }}", gate=at_least_three_words)
    stage.check_output("Long enough, this one.")


def test_a_stage_without_a_gate_accepts_any_output() -> None:
    Stage(name="write", prompt="Write on {{ topic }}").check_output("")


def test_a_gate_named_in_yaml_is_imported(tmp_path: Path, steps_module: str) -> None:
    pipeline = load(
        tmp_path,
        f"""\
        stages:
          - name: write
            prompt: "Write on {{{{ input }}}}"
            gate: "{steps_module}:at_least_three_words"
        """,
    )
    stage = pipeline.stages[0]
    stage.check_output("Long enough, this one.")
    with pytest.raises(InvalidOutput, match="fewer than 3 words"):
        stage.check_output("Short")


def test_a_gate_that_is_not_callable_is_rejected() -> None:
    with pytest.raises((ValidationError, PipelineError), match="must be a function"):
        Stage(name="write", prompt="Write", gate=42)
