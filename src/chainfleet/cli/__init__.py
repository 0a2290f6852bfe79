"""The ``chainfleet`` command. Thin: parse, call the library, print; errors become exit codes here.

Exit codes: 0 every item succeeded; 1 some items failed after all retries or a budget stopped
the run (everything else saved); 2 bad usage, configuration or input (no model was called), a
key or model the provider refused, or a folder in use; 3 nothing failed but items wait for
review; 74 the disk filled (resumable); 130 interrupted (resumable). The README lists the same.

The package is assembled in :mod:`chainfleet.cli.group`: it holds the command group and the
table of commands, and imports a command's module only when that command runs, so
``chainfleet --help`` or ``chainfleet plan`` loads none of what ``run`` needs (issue 25).
:func:`main` is the console script. The modules, lowest first:

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
from chainfleet.signals import Interrupted, at_exit, raise_on_signals, say, settle_streams, stop_at_once

__all__ = ["cli", "main"]


def main() -> None:
    """The ``chainfleet`` console script: run the command asked for (its module imported then)."""
    raise_on_signals()
    atexit.register(at_exit)  # the last word before the interpreter's own final flush
    try:
        cli()
    except KeyboardInterrupt as exc:  # while parsing, before a command's own handling
        what = exc.args[0] if isinstance(exc, Interrupted) else "Ctrl-C"
        say(f"\n{what} received while starting: nothing was run.", err=True)
        settle_streams()
        sys.exit(EXIT_INTERRUPTED)
    finally:  # the command is over: a signal while the process exits is one line and 130
        stop_at_once("as chainfleet ended: stopped; what the command did is kept")
