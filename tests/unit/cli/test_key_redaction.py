"""Issue 22, D9: a key written where a name belongs (a stage name, ``input:``, ``model:``,
``--model``, a schema file, a tool, a price) was echoed in the error. Each field, with a canary
key: the command says what is wrong, exit 2, and neither the message nor the exception's text
holds the key; a key the environment holds is hidden even without a key prefix; and an error
in ``--model`` is the command line's, not the pipeline file's line 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet.cli import cli
from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline
from chainfleet.redact import HIDDEN, scrub

CANARY = "sk-canary0123456789abcdefXYZ"
STAGE = "  - {name: a, prompt: 'A {{ topic }}'}\n"
HEAD = "name: t\nmodel: sim\ninput: topic\nstages:\n"

FIELDS = {
    "stage name": HEAD + "  - {name: %s, prompt: 'A {{ topic }}'}\n",
    "input": "name: t\nmodel: sim\ninput: %s\nstages:\n" + STAGE,
    "model": "name: t\nmodel: %s\ninput: topic\nstages:\n" + STAGE,
    "stage model": HEAD + "  - {name: a, model: %s, prompt: 'A {{ topic }}'}\n",
    "schema_file": HEAD + "  - {name: a, prompt: 'A {{ topic }}', output: {schema_file: %s}}\n",
    "tool": HEAD + "  - {name: a, tool: %s}\n",
    "tool attribute": HEAD + "  - {name: a, tool: 'os:%s'}\n",
    "price": "name: t\nmodel: sim\ninput: topic\nprices: {sim: {input: %s, output: 1}}\nstages:\n" + STAGE,
    "price table": "name: t\nmodel: sim\ninput: topic\nprices: {sim: %s}\nstages:\n" + STAGE,
}


def run_cli(tmp_path: Path, pipeline: str, *extra: str) -> tuple[int, str]:
    (tmp_path / "model.yaml").write_text(pipeline, encoding="utf-8")
    (tmp_path / "t.txt").write_text("x\ny\n", encoding="utf-8")
    args = ["run", str(tmp_path / "model.yaml"), "-i", str(tmp_path / "t.txt"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*args, "-q", *extra], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_a_key_written_in_any_field_is_not_echoed(tmp_path: Path, field: str) -> None:
    code, output = run_cli(tmp_path, FIELDS[field] % CANARY)

    assert code == 2, output
    assert "error:" in output and "Traceback" not in output
    assert CANARY not in output and "canary0123456789" not in output
    assert HIDDEN in output or field == "tool"  # (a tool's message names the field, not the value)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_the_exception_text_holds_no_key_either(tmp_path: Path, field: str) -> None:
    (tmp_path / "p.yaml").write_text(FIELDS[field] % CANARY, encoding="utf-8")
    try:
        Pipeline.from_yaml(tmp_path / "p.yaml")
    except ConfigError as exc:
        assert CANARY not in str(exc) and CANARY not in repr(exc)


def test_a_key_given_to_model_on_the_command_line_is_hidden_and_blamed_on_the_flag(tmp_path: Path) -> None:
    code, output = run_cli(tmp_path, HEAD + STAGE, "--model", CANARY)

    assert code == 2
    assert CANARY not in output
    assert "error: --model:" in output and "model.yaml:2" not in output


def test_a_value_of_a_secret_variable_is_hidden_without_a_key_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_PROVIDER_API_KEY", "plainsecretvalue")
    code, output = run_cli(tmp_path, FIELDS["model"] % "plainsecretvalue")

    assert code == 2 and "plainsecretvalue" not in output and HIDDEN in output


def test_names_paths_and_run_ids_are_left_alone() -> None:
    text = "/tmp/pytest-of-root/test_1/out: already holds run 20261207-181701-15e3b5; skipped_items_2024"
    assert scrub(text) == text
