"""Every way the command can end is a clean end: signals before the run starts, and an output
stream that is gone.

- While the package is still importing (the first few hundred milliseconds), Ctrl-C, SIGTERM
  or SIGHUP end the command with one line and exit 130: nothing has been done yet, so there is
  nothing to keep (:func:`quiet_while_starting`, called from ``chainfleet/__init__.py`` only
  when the process is the ``chainfleet`` command).
- From then until the run's own handlers take over (``cli/execute.py``), the same signals raise
  :class:`Interrupted`, a ``KeyboardInterrupt`` naming its signal, which the CLI turns into one
  line and exit 130 (:func:`raise_on_signals`).
- Once a command's work is done and it is only ending (the summary, the interpreter's own
  exit: flushing, ``atexit``), a stop signal writes one line and ends the process at once with
  exit 130 (:func:`stop_at_once`): raising there would print "Exception ignored in ..." and
  keep exit 0.
- :func:`signal_point` is the test hook that makes "a signal at this very moment" deterministic:
  with ``CHAINFLEET_TEST_SIGNAL_AT=exit`` the process sends itself SIGTERM at the point named
  ``exit``; anywhere else, and in every real run, it does nothing.
- :func:`say` writes a line, and :func:`settle_streams` flushes stdout and stderr, both never
  letting a closed terminal, a broken pipe or a full ``/dev/full`` change a finished run's exit
  code (nor print a traceback at interpreter exit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

__all__ = [
    "STOP_SIGNALS",
    "Interrupted",
    "at_exit",
    "label",
    "quiet_while_starting",
    "raise_on_signals",
    "say",
    "settle_streams",
    "signal_point",
    "stop_at_once",
]

#: the signals that mean "stop": Ctrl-C, ``kill``, and a closed terminal or dropped ssh
STOP_SIGNALS: tuple[int, ...] = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None
)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(label(signum))
        self.signum = signum


def label(signum: int) -> str:
    """How a signal is named to the user: "Ctrl-C", "SIGTERM", "SIGHUP"."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def quiet_while_starting() -> None:
    """Until :func:`raise_on_signals` replaces it: a stop signal ends the process at once, with
    one line and exit 130 (nothing is open or written yet)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            os.write(2, f"\n{label(signum)} received while starting: nothing was run.\n".encode())
        os._exit(130)

    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):  # not the main thread
            signal.signal(sig, stop)


def raise_on_signals() -> None:
    """A stop signal raises :class:`Interrupted` wherever the main thread is."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, interrupt)


def stop_at_once(when: str) -> None:
    """From now on a stop signal flushes what it can, writes ``"<signal> received <when>"`` and
    ends the process with exit 130 at once: the command's work is done (everything is saved),
    so nothing is left to stop cleanly, and an exception raised while the interpreter exits
    would only be printed and ignored."""

    def stop(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(Exception):  # a write interrupted mid-way cannot be flushed
            sys.stdout.flush()
        with contextlib.suppress(OSError):
            os.write(2, f"\n{label(signum)} received {when}\n".encode())
        os._exit(130)

    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, stop)


def signal_point(name: str) -> None:
    """Tests only: ``CHAINFLEET_TEST_SIGNAL_AT=exit`` sends this process SIGTERM there (its
    handler runs before the next line does)."""
    if os.environ.get("CHAINFLEET_TEST_SIGNAL_AT") == name:
        os.kill(os.getpid(), signal.SIGTERM)


def at_exit() -> None:
    """The command's last word (registered with ``atexit``): flush the streams."""
    signal_point("exit")  # tests: a signal as the interpreter exits
    settle_streams()


def say(line: str, *, err: bool = False) -> None:
    """``click.echo`` that survives a stream that is gone (the terminal closed, a broken pipe)."""
    import click

    with contextlib.suppress(OSError):
        click.echo(line, err=err)


def settle_streams() -> None:
    """Flush stdout and stderr; a stream that cannot take it is pointed at /dev/null, so the
    interpreter's own flush at exit does not fail (which would print a traceback and exit 120)."""
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
