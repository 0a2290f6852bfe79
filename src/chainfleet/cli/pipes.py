"""Pipes: each finished item's record out as a JSON line as it finishes (``--results -``).

``cat topics.txt | chainfleet run p.yaml -i - --results - | jq .outputs.edit`` reads the items
from stdin (:func:`chainfleet.inputs.open_input` with ``-``) and writes one line a finished item
to stdout, as results.jsonl has it plus its input ``index``. Stdout then carries data alone:
the progress and the summary go to stderr, and the output folder is still written.

``--ordered`` holds a record back until every earlier item's is out, so the lines keep input
order. A reader that goes away (``| head -3``) closes the pipe: the next write stops admission
(the chains in flight finish), and the run ends as a clean stop of what finished.

Example::

    out = ResultsOut("-", ordered=True, on_closed=lambda: runner.stop("stdout closed"))
    runner.on_record = out
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

__all__ = ["STDOUT_CLOSED", "ResultsOut"]

#: why admission stopped when the reader of ``--results -`` went away
STDOUT_CLOSED = "the reader of --results - closed it"


class ResultsOut:
    """Writes records as JSON lines to stdout (``-``) or a file, in input order if ``ordered``."""

    def __init__(self, target: str, *, ordered: bool, on_closed: Callable[[], None]) -> None:
        self.stream: IO[str] = sys.stdout if target == "-" else open(target, "w", encoding="utf-8")  # noqa: SIM115
        self.ordered = ordered
        self.on_closed = on_closed
        #: the reader went away: nothing more is written
        self.closed = False
        self.written = 0
        self._held: dict[int, dict[str, Any]] = {}
        self._next = 0

    def __call__(self, row: dict[str, Any]) -> None:
        if self.closed:
            return
        if not self.ordered:
            self._write(row)
            return
        self._held[row["index"]] = row
        while self._next in self._held and not self.closed:
            self._write(self._held.pop(self._next))
            self._next += 1

    def close(self) -> None:
        """Write what ``ordered`` still holds (items after one that never came: a stopped run,
        a resumed one), in order; then close a file."""
        for index in sorted(self._held):
            self._write(self._held.pop(index))
        if self.stream is not sys.stdout and not self.closed:
            self.stream.close()

    def _write(self, row: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self.stream.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # the reader is gone (ValueError: a closed file)
            self.closed = True
            self.on_closed()
            return
        self.written += 1
