"""The ``chainfleet`` command. Thin: parse, call the library, print; errors become exit codes here.

Exit codes: 0 every item succeeded; 1 some items failed after all retries or a budget stopped
the run (everything else saved); 2 bad usage, configuration or input (no model was called), a
key or model the provider refused, or a folder in use; 3 nothing failed but items wait for
review; 74 the disk filled (resumable); 130 interrupted (resumable). The README lists the same.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from chainfleet.errors import ConfigError
from chainfleet.signals import Interrupted, raise_on_signals, say, settle_streams

__all__ = ["main"]

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
    import functools

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


def main() -> None:
    raise_on_signals()
    atexit.register(settle_streams)  # the last word before the interpreter's own final flush
    try:
        from chainfleet.cli import compare, demo, plan, report, review, run, simserver  # noqa: F401 - registers the commands

        cli()
    except KeyboardInterrupt as exc:  # while parsing, before a command's own handling
        what = exc.args[0] if isinstance(exc, Interrupted) else "Ctrl-C"
        say(f"\n{what} received while starting: nothing was run.", err=True)
        settle_streams()
        sys.exit(EXIT_INTERRUPTED)
