"""The input file formats, and a reader for each: text lines, JSON Lines, CSV and TSV.

A reader streams ``(item, line)`` pairs (:data:`Stream`): the :class:`~chainfleet.inputs.item.Item`
and the physical line an error about it should point at. It reads the file again from the top
each time it is called, so an input can be iterated any number of times. Asked to go on past a
line it cannot read, it hands the :class:`~chainfleet.errors.InputError` to ``on_bad`` (an
:data:`OnBad`) and reads on; without one, the error is raised. Some problems end the reading
whatever ``on_bad`` says: a CSV quote never closed, a line over the size limit.

The format comes from the file's extension, or a ``format=`` name (:func:`resolve_format`)::

    path = Path("rows.tsv")
    kind, delimiter = resolve_format(path, None)         # ("csv", "\\t")
    for item, line in read_csv(path, delimiter, read_header(path, delimiter)):
        ...
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Literal

from chainfleet.errors import InputError
from chainfleet.inputs.item import Item, item_id, json_type
from chainfleet.inputs.lines import lines, parse_json
from chainfleet.redact import clip

__all__ = [
    "ACCEPTED",
    "Format",
    "OnBad",
    "Stream",
    "read_csv",
    "read_header",
    "read_jsonl",
    "read_txt",
    "resolve_format",
    "skip",
]

Format = Literal["txt", "jsonl", "csv", "parquet", "iterable"]

#: extension (or ``format=`` name) -> (format, CSV delimiter)
_FORMATS: dict[str, tuple[Format, str]] = {
    "": ("txt", ","),
    "txt": ("txt", ","),
    "text": ("txt", ","),
    "md": ("txt", ","),
    "lst": ("txt", ","),
    "jsonl": ("jsonl", ","),
    "ndjson": ("jsonl", ","),
    "csv": ("csv", ","),
    "tsv": ("csv", "\t"),
    "parquet": ("parquet", ","),
}
#: the extensions accepted, as a message says them
ACCEPTED = (
    ".txt, .text, .md, .lst or no extension (one input per line), "
    ".jsonl or .ndjson (one JSON object per line), "
    ".csv or .tsv (a header row, then one row per input), "
    ".parquet or a folder of them (one row per input)"
)

#: (item, line) pairs: ``line`` is the physical line an error message should point at
Stream = Iterator[tuple[Item, int]]
#: what a stream calls with a line it cannot read, when asked to go on past it (None: raise)
OnBad = Callable[[InputError], None] | None


def resolve_format(path: Path, format: str | None) -> tuple[Format, str]:
    if format is not None:
        key = format.lower().lstrip(".")
        if key not in _FORMATS:
            raise InputError(f"unknown input format {format!r}; accepted: {ACCEPTED}", where=str(path))
        return _FORMATS[key]
    suffix = path.suffix.lower()
    if suffix[1:] not in _FORMATS:
        raise InputError(
            f"cannot tell the input format from the extension {suffix!r}; accepted: {ACCEPTED}",
            where=str(path),
        )
    return _FORMATS[suffix[1:]]


def read_txt(path: Path, field: str) -> Stream:
    index = 0
    for lineno, text in lines(path):
        text = text.strip()
        if text and not text.startswith("#"):
            yield Item(str(lineno), index, lineno, {field: text}), lineno
            index += 1


def skip(problem: InputError) -> None:
    """Go on past a bad line (when reading again for something else)."""


def read_jsonl(path: Path, on_bad: OnBad = None) -> Stream:
    index = 0
    for lineno, text in lines(path):
        if not text.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            value = parse_json(text, where)
            if not isinstance(value, dict):
                raise InputError(f"expected a JSON object, got {json_type(value)}", where=where)
            item = Item(item_id(value, lineno, where), index, lineno, value)
        except InputError as exc:
            if on_bad is None:
                raise
            on_bad(exc)
            continue
        yield item, lineno
        index += 1


def read_header(path: Path, delimiter: str) -> tuple[str, ...]:
    """The checked header of a CSV file, for :func:`open_input`."""
    rows = _csv_rows(path, delimiter)
    try:
        line, cells = next(((line, cells) for line, cells in rows if not _blank(cells)), (0, []))
    finally:
        rows.close()
    if not line:
        raise InputError(
            "the file is empty; a CSV file starts with a header row naming its columns",
            where=str(path),
        )
    names = tuple(cell.strip() for cell in cells)
    for number, name in enumerate(names, 1):
        if not name:
            raise InputError(f"column {number} of the header has no name", where=f"{path}:{line}")
        if name in names[: number - 1]:
            shown = clip(repr(name), 80)
            raise InputError(f"the header names the column {shown} twice", where=f"{path}:{line}")
    return names


def read_csv(path: Path, delimiter: str, header: tuple[str, ...], on_bad: OnBad = None) -> Stream:
    rows = _csv_rows(path, delimiter)
    for line, cells in rows:
        if _blank(cells):
            continue
        if tuple(cell.strip() for cell in cells) != header:
            raise InputError("the header row changed since the file was opened", where=f"{path}:{line}")
        break
    index = 0
    row = 0  # rows are numbered like a spreadsheet's, blank ones included
    for line, cells in rows:
        row += 1
        if _blank(cells):
            continue
        where = f"{path}:{line}"
        try:
            if len(cells) != len(header):
                raise InputError(
                    f"row {row} has {len(cells)} cells but the header has {len(header)} columns",
                    where=where,
                )
            fields = dict(zip(header, cells, strict=True))
            item = Item(item_id(fields, row, where), index, row, fields)
        except InputError as exc:
            if on_bad is None:
                raise
            on_bad(exc)
            continue
        yield item, line
        index += 1


def _csv_rows(path: Path, delimiter: str) -> Generator[tuple[int, list[str]], None, None]:
    """Yield (first physical line, cells) for every CSV record, blank ones included."""
    reader = csv.reader((text for _, text in lines(path)), delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"malformed CSV: {exc}", where=f"{path}:{start}") from None
        yield start, cells


def _blank(cells: list[str]) -> bool:
    return all(not cell.strip() for cell in cells)
