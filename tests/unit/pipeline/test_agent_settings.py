"""Agent stages in a pipeline file: tools become schemas; every mistake is exit 2 naming its line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet.cli import cli
from chainfleet.errors import PipelineError
from chainfleet.pipeline import Pipeline
from chainfleet.providers import Completion, CompletionRequest, Provider
from chainfleet.providers.registry import register

FNS = "unit.pipeline.agent_fns"


def load(tmp_path: Path, text: str) -> Pipeline:
    path = tmp_path / "agent.yaml"
    path.write_text(text, encoding="utf-8")
    return Pipeline.from_yaml(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load(tmp_path, text)
    return caught.value.lines()


def test_a_stage_with_tools_is_an_agent_whose_tools_have_schemas(tmp_path: Path) -> None:
    pipeline = load(
        tmp_path,
        f"""\
stages:
  - name: research
    prompt: "Research {{{{ input }}}}"
    tools:
      - function: {FNS}:search
        concurrency: 2
        timeout: 5
        retries: 1
      - function: {FNS}:fetch_page
      - {{function: {FNS}:structured, name: find}}
    max_turns: 4
    max_tool_calls: 9
    parallel_tools: 2
""",
    )
    stage = pipeline.stages[0]
    assert stage.is_agent and (stage.max_turns, stage.max_tool_calls, stage.parallel_tools) == (4, 9, 2)
    search, fetch, find = (tool.definition() for tool in stage.function_tools)
    assert search["description"] == "Search the corpus for passages."
    assert search["parameters"]["properties"]["query"] == {
        "description": "what to look for",
        "title": "Query",
        "type": "string",
    }
    assert search["parameters"]["required"] == ["query"]
    assert "idempotency_key" not in fetch["parameters"]["properties"]  # chainfleet fills it
    assert find["name"] == "find" and "Query" in find["parameters"]["$defs"]


def test_the_default_budget_is_ten_turns() -> None:
    pipeline = Pipeline.from_dict(
        {"stages": [{"name": "a", "prompt": "x {{ input }}", "tools": [{"function": f"{FNS}:search"}]}]}
    )
    assert pipeline.stages[0].max_turns == 10 and pipeline.stages[0].max_tool_calls is None


def test_every_mistake_is_one_line_naming_file_line_stage_and_field(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        f"""\
stages:
  - name: research
    prompt: "Research {{{{ input }}}}"
    tools:
      - function: {FNS}:nosuch
      - function: {FNS}:takes_a_socket
      - function: {FNS}:untyped
    max_turns: 0
""",
    )
    path = tmp_path / "agent.yaml"
    assert lines == [
        f"{path}:5: stage 'research' (stages[0]), field 'tools.0.function': module '{FNS}' has no 'nosuch'",
        f"{path}:6: stage 'research' (stages[0]), field 'tools.1.function': "
        "parameter 'sock': its type socket cannot become a JSON Schema",
        f"{path}:7: stage 'research' (stages[0]), field 'tools.2.function': "
        "parameter 'query' has no type hint, so it cannot become a JSON Schema",
        f"{path}:8: stage 'research' (stages[0]), field 'max_turns': "
        "Input should be greater than or equal to 1 (got 0)",
    ]


def test_an_agent_runs_in_batch_mode_on_a_batch_api_that_carries_tools(tmp_path: Path) -> None:
    for model in ("sim", "openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"):
        pipeline = load(
            tmp_path,
            f"""\
mode: batch
model: {model}
stages:
  - name: research
    prompt: "Research {{{{ input }}}}"
    tools: [{{function: {FNS}:search}}]
""",
        )
        assert pipeline.batched(pipeline.stages[0]) and pipeline.stages[0].is_agent


class _NoTools(Provider):
    kind = "no-tools"

    def __init__(self, config: object) -> None:
        self.config = config

    async def complete(self, request: CompletionRequest) -> Completion:
        return Completion(text=request.prompt)


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_an_agent_on_a_provider_that_cannot_carry_tools_is_refused_naming_the_mode(
    tmp_path: Path, mode: str
) -> None:
    register("no-tools", _NoTools)
    lines = problems(
        tmp_path,
        f"""\
mode: {mode}
model: no-tools:m
stages:
  - name: research
    prompt: "Research {{{{ input }}}}"
    tools: [{{function: {FNS}:search}}]
""",
    )
    where = f"{tmp_path / 'agent.yaml'}:2: field 'model': agent stage 'research' "
    if mode == "batch":
        assert lines == [
            where + "(tools:, mode: batch) needs a batch API that carries tool calls; provider kind "
            "'no-tools' has none (use sim, openai or anthropic, or `mode: online` with a model that "
            "can call tools)"
        ]
    else:
        assert lines == [
            where + "(tools:) needs a model that can call tools; provider kind 'no-tools' cannot "
            "(use sim, openai or anthropic)"
        ]


def test_a_tool_entry_is_a_function_or_an_mcp_server(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        """\
stages:
  - name: research
    prompt: "Research {{ input }}"
    tools:
      - {}
      - mcp: {command: [python], url: "http://127.0.0.1:1/mcp"}
""",
    )
    assert "tools.0" in lines[0] and "exactly one of 'function: module:name' or 'mcp:" in lines[0]
    assert "tools.1.mcp" in lines[1] and "exactly one of 'command' (stdio) or 'url'" in lines[1]


def test_the_cli_exits_2_before_any_call(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f'stages:\n  - name: r\n    prompt: "R {{{{ input }}}}"\n    tools: [{{function: {FNS}:nosuch}}]\n',
        encoding="utf-8",
    )
    topics = tmp_path / "topics.txt"
    topics.write_text("tea\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(path), "-i", str(topics), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"{path}:4: stage 'r' (stages[0]), field 'tools.0.function'" in result.stderr
    assert not (tmp_path / "out").exists()
