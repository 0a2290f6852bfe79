"""The ``chainfleet`` command. Thin: parse, call the library, print; errors become exit codes here.

Exit codes: 0 every item succeeded; 1 some items failed after all retries or a budget stopped
the run (everything else saved); 2 bad usage, configuration or input (no model was called), a
key or model the provider refused, or a folder in use; 3 nothing failed but items wait for
review; 74 the disk filled (resumable); 130 interrupted (resumable). The README lists the same.

The package is assembled here and nowhere else: :mod:`chainfleet.cli.group` holds the command
group, one module per command adds its command to it, and :func:`main` (the console script)
imports those modules and calls the group. The imports wait for :func:`main` so that importing
a piece (``chainfleet.cli.progress`` for its display) loads no command and none of what the
commands need. The modules, lowest first:

- ``group`` (the group, errors into exit codes) and ``options`` (options several commands take);
- ``view`` (the progress display's numbers and text) and ``progress`` (its timer);
- ``execute``: running a pipeline, shared by ``run`` and ``resume``;
- one module per command: ``run``, ``resume``, ``compare``, ``demo`` (which prints as
  ``compare`` does), ``exec`` (any program per item), ``plan``, ``report`` (with ``runs``),
  ``review``, ``simserver``.
"""

from __future__ import annotations

import atexit
import sys

from chainfleet.cli.group import EXIT_INTERRUPTED, cli
from chainfleet.signals import Interrupted, raise_on_signals, say, settle_streams

__all__ = ["cli", "main"]


def main() -> None:
    """The ``chainfleet`` console script: add every command to the group, then run the one asked for."""
    raise_on_signals()
    atexit.register(settle_streams)  # the last word before the interpreter's own final flush
    try:
        from chainfleet.cli import (  # noqa: F401 - registers the commands
            compare,
            demo,
            exec,
            plan,
            report,
            resume,
            review,
            run,
            simserver,
        )

        cli()
    except KeyboardInterrupt as exc:  # while parsing, before a command's own handling
        what = exc.args[0] if isinstance(exc, Interrupted) else "Ctrl-C"
        say(f"\n{what} received while starting: nothing was run.", err=True)
        settle_streams()
        sys.exit(EXIT_INTERRUPTED)
