"""The command door's template and verdicts, in-process: placeholders filled as argv words,
bad commands and unknown fields caught before anything runs, and how a child's end becomes the
item's output or its error."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from chainfleet.code.command import (
    ChildResult,
    CommandFailed,
    CommandTemplate,
    CommandTimedOut,
    judge,
    stderr_tail,
)
from chainfleet.errors import ConfigError


def test_placeholders_fill_one_argv_word_each_never_through_a_shell() -> None:
    template = CommandTemplate.parse(["echo", "{topic}", "--id={id}", "{topic}-{n}"])

    argv = template.fill({"topic": "solar; rm -rf ~", "n": 3}, item_id="7")

    assert argv == ["echo", "solar; rm -rf ~", "--id=7", "solar; rm -rf ~-3"]
    assert template.placeholders() == ["topic", "id", "n"]


def test_braces_that_are_not_a_field_name_stay_as_they_are() -> None:
    template = CommandTemplate.parse(["awk", "{print $1}", '{"a": 1}', "{{topic}}"])

    assert template.placeholders() == []
    assert template.fill({"topic": "x"}, item_id="1") == ["awk", "{print $1}", '{"a": 1}', "{topic}"]


def test_non_string_fields_go_in_as_json() -> None:
    template = CommandTemplate.parse(["echo", "{tags}", "{n}", "{none}"])

    assert template.fill({"tags": ["a", "b"], "n": 2.5, "none": None}, item_id="1")[1:] == [
        '["a", "b"]',
        "2.5",
        "null",
    ]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "no command given"),
        ([""], "no command given"),
        (["no-such-program-xyz", "{topic}"], "command not found: 'no-such-program-xyz' (not on PATH)"),
        (["./nope.sh"], "command not found: './nope.sh' (no such file)"),
        (["{topic}"], "the program itself cannot be a placeholder"),
    ],
)
def test_bad_commands_are_one_config_error(argv: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CommandTemplate.parse(argv)

    assert says in caught.value.line


def test_a_path_that_is_not_executable_is_not_found(tmp_path: Path) -> None:
    script = tmp_path / "chain.sh"
    script.write_text("echo hi\n")

    with pytest.raises(ConfigError, match="command not found"):
        CommandTemplate.parse([str(script)])
    script.chmod(0o755)
    assert CommandTemplate.parse([str(script)]).argv == (str(script),)


def test_an_unknown_placeholder_says_did_you_mean_and_where() -> None:
    template = CommandTemplate.parse(["echo", "{topik}"])

    with pytest.raises(ConfigError) as caught:
        template.check_fields({"topic", "audience"}, where="topics.csv")

    assert caught.value.line == (
        "topics.csv: placeholder {topik} names no field of the input (did you mean {topic}?); "
        "the fields are {audience}, {id}, {topic}"
    )


def test_the_output_file_pattern_is_checked_with_the_command() -> None:
    template = CommandTemplate.parse(["echo", "{topic}"])

    template.check_fields({"topic"}, where="in.csv", extra=["out/{id}.md"])
    with pytest.raises(ConfigError, match=r"placeholder \{slug\}"):
        template.check_fields({"topic"}, where="in.csv", extra=["out/{slug}.md"])


def test_exit_zero_is_the_output_and_anything_else_fails_with_the_stderr_tail() -> None:
    assert judge(ChildResult(0, b"the article\n", b"noise"), output_file=None) == "the article\n"

    lines = b"".join(f"line {n}\n".encode() for n in range(10)) + b"\n  \n"
    with pytest.raises(CommandFailed) as caught:
        judge(ChildResult(3, b"", lines), output_file=None)

    assert caught.value.status == 3
    assert caught.value.kind == "command_failed"
    assert (
        str(caught.value)
        == "the command exited with code 3; stderr: line 5 | line 6 | line 7 | line 8 | line 9"
    )


def test_a_signal_and_a_timeout_are_named() -> None:
    with pytest.raises(CommandFailed, match="was ended by SIGKILL; stderr was empty"):
        judge(ChildResult(-signal.SIGKILL, b"", b""), output_file=None)
    with pytest.raises(CommandTimedOut, match="ran past its timeout of 1.5 s") as caught:
        judge(ChildResult(-signal.SIGTERM, b"", b"slow\n", timed_out=True), output_file=None, timeout=1.5)
    assert caught.value.kind == "command_timeout"


def test_the_output_file_replaces_stdout(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("from the file")

    assert judge(ChildResult(0, b"stdout", b""), output_file=str(tmp_path / "a.md")) == "from the file"
    with pytest.raises(CommandFailed, match="exited with 0 but its --output-file .* cannot be read"):
        judge(ChildResult(0, b"stdout", b""), output_file=str(tmp_path / "missing.md"))


def test_the_stderr_tail_is_clipped_to_one_line() -> None:
    assert len(stderr_tail(b"x" * 5000)) < 600
    assert stderr_tail(b"\xff\xfebad bytes\n").endswith("bad bytes")
