"""The command table: ``chainfleet --help`` lists each command from ``COMMANDS`` without
importing it, so each line there must say what the command's own help says, and every command a
module adds to the group must have its line."""

from __future__ import annotations

import importlib

import click
from click.testing import CliRunner

from chainfleet.cli.group import COMMANDS, cli


def test_each_listed_help_is_the_commands_own() -> None:
    for name, (module, short) in COMMANDS.items():
        importlib.import_module(module)
        command = cli.commands[name]  # the module registered the command of that name

        assert command.get_short_help_str(limit=200) == short, name


def test_every_registered_command_is_in_the_table() -> None:
    for module in {module for module, _ in COMMANDS.values()}:
        importlib.import_module(module)

    assert sorted(cli.commands) == sorted(COMMANDS)


def test_a_command_is_found_by_name_and_an_unknown_one_is_a_usage_error() -> None:
    runner = CliRunner()

    assert runner.invoke(cli, ["plan", "--help"]).exit_code == 0
    result = runner.invoke(cli, ["nope"])
    assert result.exit_code == 2
    assert "No such command 'nope'" in result.output
    assert isinstance(cli.get_command(click.Context(cli), "run"), click.Command)
