"""The ``chainfleet`` command group, and how every command turns errors into exit codes.

Each command module (``cli/run.py``, ``cli/report.py`` ...) imports :data:`cli` from here and
adds its command to it with ``@cli.command``; :func:`chainfleet.cli.main` imports those modules
and calls the group. Nothing here imports a command, so no command imports its own importer.

Example::

    @cli.command("hello")
    @config_errors
    def hello_command() -> None:
        raise ConfigError("no greeting configured")  # one line on stderr, exit code 2
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from chainfleet.errors import ConfigError
from chainfleet.signals import Interrupted, say, settle_streams

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "cli", "config_errors"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
