"""The ``chainfleet`` command group, and how every command turns errors into exit codes.

Each command module (``cli/run.py``, ``cli/report.py`` ...) imports :data:`cli` from here and
adds its command to it with ``@cli.command``. The group imports a command's module only when
that command is asked for (:class:`LazyGroup`): :data:`COMMANDS` names each command's module and
its one-line help, so ``chainfleet --help`` lists every command without importing one, and
``chainfleet plan`` never loads the runner. A new command is one line in :data:`COMMANDS`
(``tests/unit/cli/test_lazy_commands.py`` checks that each line's help is the command's own).
Nothing here imports a command at import time, so no command imports its own importer.

Example::

    @cli.command("hello")
    @config_errors
    def hello_command() -> None:
        raise ConfigError("no greeting configured")  # one line on stderr, exit code 2
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from chainfleet.errors import ConfigError
from chainfleet.signals import Interrupted, say, settle_streams

__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "EXIT_USAGE", "LazyGroup", "cli", "config_errors"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130

# command -> (the module that adds it to the group, the one line `chainfleet --help` shows)
COMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("chainfleet.cli.compare", "Run an input one at a time, then in parallel, and compare."),
    "demo": ("chainfleet.cli.demo", "The classic 3-topic exercise: one at a time vs in parallel."),
    "exec": ("chainfleet.cli.exec", "Run any program once per item, its model calls through chainfleet."),
    "plan": ("chainfleet.cli.plan", "Expected run times per concurrency, and which limit binds."),
    "report": ("chainfleet.cli.report", "Write a run's output folder again from its run store."),
    "resume": ("chainfleet.cli.resume", "Continue an interrupted or stopped run."),
    "review": ("chainfleet.cli.review", "Approve, edit or send back the items waiting for review."),
    "run": ("chainfleet.cli.run", "Run a pipeline over every item of an input file."),
    "runs": ("chainfleet.cli.report", "List the runs under a folder."),
    "sim-server": (
        "chainfleet.cli.simserver",
        "Serve the simulated model over the OpenAI and Anthropic APIs.",
    ),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module the first time the command is looked up
    (click's own "lazy loading subcommands" pattern), listing the rest from :data:`COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name][0])  # its @cli.command adds it
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands' one-line help, from :data:`COMMANDS` for those not imported yet."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is not None and command.hidden:
                continue
            short = command.get_short_help_str(formatter.width) if command else COMMANDS[name][1]
            rows.append((name, short))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="chainfleet")
def cli() -> None:
    """Run LLM agent chains over many inputs at once.

    \b
    Start here:
      chainfleet demo                      the classic 3-topic exercise on the simulated model
      chainfleet run examples/content.yaml --input examples/topics.txt -c 5
    """


def config_errors(fn: F) -> F:
    """Turn a ConfigError into one line on stderr and exit code 2; Ctrl-C, SIGTERM or SIGHUP
    before a run has its own handlers into one line and 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            for line in exc.lines():
                click.echo(f"error: {line}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt as exc:
            what = exc.args[0] if isinstance(exc, Interrupted) else "Ctrl-C"
            say(f"\n{what} received: stopped; every finished stage result is kept.", err=True)
            settle_streams()
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]
