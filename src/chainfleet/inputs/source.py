"""Streaming inputs: plain text, JSON Lines and CSV files, or any Python iterable.

An input is a sequence of :class:`~chainfleet.inputs.item.Item` objects, each one topic, object
or row with a stable ``id``. Files are streamed: iterating an :class:`InputSource` reads one line
at a time, so a 1,000,000-line file takes as little memory as a ten-line one, and every
iteration re-opens the file and reads it again from the top.

Formats, chosen from the file's extension (each read by :mod:`chainfleet.inputs.formats`):

========================================  =============================================  =====
extension                                 one item is                                    id
========================================  =============================================  =====
``.txt`` ``.text`` ``.md`` ``.lst``, none  a non-blank line not starting with ``#``        (1)
``.jsonl`` ``.ndjson``                    a JSON object on its own line                  (2)
``.csv``, ``.tsv`` (tab-separated)        a row under the header row                     (2)
``.parquet``, or a folder of them         a row: its columns are its fields              (3)
========================================  =============================================  =====

(1) the physical line number, counting blank and comment lines, so ids do not move when a
comment is added below. (2) the ``id`` field or column when there is one, else the line number
(JSONL) or the row number after the header, 1-based (CSV). (3) the ``id_column`` (``id`` if
there is one), else the row number in the data set, 1-based (:mod:`chainfleet.inputs.parquet`).

Every file is read as UTF-8 (a byte-order mark is tolerated). Any valid JSON is carried safely,
within limits that keep one poison line from taking the run down, each a ``path:line`` error
(see :mod:`chainfleet.inputs.lines`): a line of at most ``MAX_LINE_BYTES``, integers of at most
``MAX_INT_DIGITS`` digits, values nested at most ``MAX_DEPTH`` deep. A lone surrogate escape
(``"\\ud800"``, valid JSON but not text that can be written as UTF-8) is replaced with U+FFFD,
the replacement character, with a warning naming the line: the item still runs, and every file
written from it can be read back. Anything that cannot be read raises
:class:`~chainfleet.errors.InputError` whose ``where`` is ``"path:line"``, so a user can jump to
it in an editor. Iteration checks each line as it meets it; :meth:`InputSource.scan` reads the
whole input once up front and also catches what only a full pass can see (duplicate ids, missing
fields, an empty input)::

    source = open_input("topics.txt", input_field="topic")
    total = source.scan(required={"topic"})   # raises InputError at the first bad line
    for item in source:                        # streams again, one item at a time
        print(item.id, item.fields["topic"])
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from chainfleet.errors import ConfigError, InputError
from chainfleet.inputs.formats import (
    Format,
    OnBad,
    Stream,
    read_csv,
    read_header,
    read_jsonl,
    read_txt,
    resolve_format,
    skip,
)
from chainfleet.inputs.item import Item, item_id
from chainfleet.inputs.lines import STDIN, open_file
from chainfleet.inputs.parquet import parquet_columns, parquet_files, read_parquet
from chainfleet.redact import clip, listed

__all__ = ["MAX_PROBLEMS", "InputSource", "items_from", "open_input"]

#: validation lists at most this many bad input lines (then "and N more")
MAX_PROBLEMS = 20


class InputSource:
    """A re-iterable, streaming sequence of :class:`Item`; build one with :func:`open_input`
    or :func:`items_from`.

    ``fields`` is the set of field names every item is known to have (the input field for
    text, the header for CSV), or ``None`` when only reading tells (JSONL, iterables).
    ``reiterable`` is false only for a source built from a one-shot iterator.
    """

    def __init__(
        self,
        *,
        path: Path | None,
        format: Format,
        fields: frozenset[str] | None,
        stream: Callable[[OnBad], Stream],
        ids_may_repeat: bool = True,
        reiterable: bool = True,
        streamed: bool = False,
    ) -> None:
        self.path = path
        self.format: Format = format
        self.fields = fields
        self.reiterable = reiterable
        #: read from a pipe (standard input): its next line may be a long time coming, so the
        #: runner reads it on a thread of its own, and never reads past where the run stopped
        self.streamed = streamed
        self._stream = stream
        self._ids_may_repeat = ids_may_repeat

    def __repr__(self) -> str:
        origin = str(self.path) if self.path is not None else "<iterable>"
        return f"InputSource({origin!r}, format={self.format!r})"

    def __iter__(self) -> Iterator[Item]:
        """Stream the items from the start (a file is re-opened each time)."""
        return (item for item, _ in self._stream(None))

    def scan(self, required: Collection[str] = ()) -> int:
        """Read the whole input once, check every item, keep none of them; return the count.

        Raises :class:`InputError` listing the first :data:`MAX_PROBLEMS` problems (and how many
        more there were): unreadable or malformed lines, items without one of the ``required``
        fields, ids empty or badly typed, ids used twice (both lines are named), or no
        items at all. A problem the reader cannot read past (a CSV quote never closed, a line
        over the size limit) ends the list. Memory stays bounded: ids are
        remembered as 8-byte digests. On a source built from a one-shot iterator, scanning
        consumes it.
        """
        names = [required] if isinstance(required, str) else list(dict.fromkeys(required))
        if self.fields is not None:
            self._check_known_fields(names)
            names = []  # every item has every known field
        seen: set[int] = set()
        count = 0
        problems: list[ConfigError] = []
        found = 0

        def bad(problem: InputError) -> None:
            nonlocal found
            found += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(problem)

        try:
            for item, line in self._stream(bad):
                count += 1
                missing = [name for name in names if name not in item.fields]
                if missing:
                    bad(InputError(_missing_field(missing[0], item.fields), where=self._where(line)))
                    continue
                if self._ids_may_repeat:
                    digest = _digest(item.id)
                    if digest in seen and len(problems) >= MAX_PROBLEMS:
                        found += 1  # only counted now: confirming one rereads the input
                    elif digest in seen:
                        try:
                            self._check_duplicate(item, line)
                        except InputError as exc:
                            bad(exc)
                    seen.add(digest)
        except InputError as exc:  # the reader cannot go past this one
            bad(exc)
        if problems:
            raise ConfigError.gather(problems, left_off=found - len(problems))
        if count == 0:
            raise InputError(self._empty_message(), where=self._where())
        return count

    def _where(self, line: int | None = None) -> str:
        if self.path is None:
            return "items" if line is None else f"item {line}"
        return str(self.path) if line is None else f"{self.path}:{line}"

    def _check_known_fields(self, required: list[str]) -> None:
        assert self.fields is not None
        missing = [name for name in required if name not in self.fields]
        if not missing:
            return
        name = missing[0]
        if self.format == "txt":
            (field,) = self.fields
            raise InputError(
                f"each line of a text file becomes the field {field!r}, but field {name!r} is "
                f"required (name the input {name!r} in the pipeline, or use a CSV or JSONL file)",
                where=self._where(),
            )
        columns = ", ".join(repr(column) for column in sorted(self.fields))
        hint = ""
        if len(self.fields) == 1 and any(sep in column for column in self.fields for sep in ";|\t"):
            hint = " (a single column: is the file separated by something other than commas?)"
        raise InputError(f"no column {name!r}; the header has {columns}{hint}", where=self._where())

    def _check_duplicate(self, item: Item, line: int) -> None:
        """Raise for a repeated id, naming the first use; return if it was only a digest clash."""
        what = f"duplicate id {item.id!r}"
        if not self.reiterable:  # cannot read it again to find the first use
            raise InputError(f"{what}: an earlier item has the same id", where=self._where(line))
        for other, other_line in self._stream(skip):
            if other.index >= item.index:
                return  # two ids with the same digest, both unique: not a duplicate
            if other.id == item.id:
                place = f"item {other_line}" if self.path is None else f"line {other_line}"
                if self.format == "csv":
                    place = f"row {other.line} (line {other_line})"
                raise InputError(f"{what}, first used on {place}", where=self._where(line))

    def _empty_message(self) -> str:
        return {
            "txt": "no inputs: the file is empty or holds only blank lines and # comments",
            "jsonl": "no inputs: the file is empty or holds only blank lines",
            "csv": "no inputs: the file has a header but no rows",
            "parquet": "no inputs: the Parquet data has no rows",
        }.get(self.format, "no inputs: the iterable is empty")


def open_input(
    path: str | os.PathLike[str],
    *,
    input_field: str = "input",
    format: str | None = None,
    id_column: str | None = None,
) -> InputSource:
    """Open an input file for streaming; the format comes from the extension unless given.

    ``input_field`` names the field a plain-text line becomes. ``format`` is one of ``txt``,
    ``jsonl``, ``csv`` or ``tsv`` (or an accepted extension without its dot). The file is
    opened once here so that a missing, unreadable or wrongly named file fails at once; a CSV
    header is read and checked here too (it must exist, with unique, non-empty names).
    Lines are only checked as they are read: call :meth:`InputSource.scan` to check them all.

    >>> source = open_input("rows.csv")        # doctest: +SKIP
    >>> source.fields                          # doctest: +SKIP
    frozenset({'id', 'topic'})
    """
    if not input_field:
        raise ValueError("input_field must be a non-empty field name")
    if str(path) == "-":
        return _stdin(input_field, format)
    file = Path(path)
    folder = file.is_dir() and any(file.rglob("*.parquet"))  # a data set kept as Parquet files
    kind, delimiter = ("parquet", ",") if folder else resolve_format(file, format)
    if kind == "parquet":
        return _parquet(file, id_column)
    if id_column is not None:
        raise ConfigError("--id-column is for Parquet inputs (a JSONL or CSV input's id is its 'id')")
    open_file(file).close()  # fail now, not at the first iteration
    if kind == "txt":
        return InputSource(
            path=file,
            format="txt",
            fields=frozenset({input_field}),
            stream=lambda on_bad: read_txt(file, input_field),
            ids_may_repeat=False,
        )
    if kind == "jsonl":
        return InputSource(
            path=file, format="jsonl", fields=None, stream=lambda on_bad: read_jsonl(file, on_bad)
        )
    header = read_header(file, delimiter)
    return InputSource(
        path=file,
        format="csv",
        fields=frozenset(header),
        stream=lambda on_bad: read_csv(file, delimiter, header, on_bad),
        ids_may_repeat="id" in header,
    )


def _parquet(path: Path, id_column: str | None) -> InputSource:
    """A Parquet file, or a folder of them as one data set (:mod:`chainfleet.inputs.parquet`)."""
    files = parquet_files(path)
    columns = parquet_columns(files)
    if id_column is not None and id_column not in columns:
        raise ConfigError(
            f"no column {id_column!r}; the data has {listed(sorted(columns))}", where="--id-column"
        )
    return InputSource(
        path=path,
        format="parquet",
        fields=columns,
        stream=lambda on_bad: read_parquet(files, id_column, on_bad),
        ids_may_repeat=True,
    )


def _stdin(input_field: str, format: str | None) -> InputSource:
    """Standard input (``-``), read once as it arrives: text lines, or JSONL with ``format``.
    Each line is checked as it is read, with a file's messages (``<stdin>:3: ...``)."""
    kind, _ = resolve_format(STDIN, format or "txt")
    if kind == "txt":
        stream: Callable[[OnBad], Stream] = lambda on_bad: read_txt(STDIN, input_field)  # noqa: E731
    elif kind == "jsonl":
        stream = lambda on_bad: read_jsonl(STDIN, on_bad)  # noqa: E731
    else:
        raise InputError("standard input is read as text lines or JSONL (--input-format jsonl)", where="-")
    fields = frozenset({input_field}) if kind == "txt" else None
    return InputSource(
        path=STDIN,
        format=kind,
        fields=fields,
        stream=stream,
        ids_may_repeat=kind != "txt",
        reiterable=False,
        streamed=True,
    )


def items_from(
    values: Iterable[str | Mapping[str, Any] | Item], *, input_field: str = "input"
) -> InputSource:
    """Make an :class:`InputSource` from Python values, for use from code.

    A string becomes ``{input_field: string}`` (kept as given: not stripped, not skipped when
    blank); a mapping is copied and takes its ``id`` like a JSONL object; an :class:`Item`
    keeps its id and fields. Items without an ``id`` are numbered by position, from 1.

    A list or other collection can be iterated (and scanned) any number of times. A one-shot
    iterator such as a generator can be read once: a second iteration raises
    :class:`InputError` rather than silently yielding nothing, so do not :meth:`~InputSource.scan`
    one before running it.

    >>> [item.id for item in items_from(["solar power", {"id": "w1", "input": "wind"}])]
    ['1', 'w1']
    """
    if isinstance(values, (str, bytes, Mapping)):
        raise TypeError("items_from() takes an iterable of inputs; wrap a single input in a list")
    if not input_field:
        raise ValueError("input_field must be a non-empty field name")
    one_shot = iter(values) is values
    started = False

    def stream(on_bad: OnBad) -> Stream:
        nonlocal started
        if one_shot and started:
            raise InputError(
                "these inputs came from a one-shot iterator that has already been read; "
                "pass a list to read them more than once",
                where="items",
            )
        started = True
        for index, value in enumerate(values):
            try:
                item = _from_value(value, index, input_field)
            except InputError as exc:
                if on_bad is None:
                    raise
                on_bad(exc)
                continue
            yield item, index + 1

    return InputSource(path=None, format="iterable", fields=None, stream=stream, reiterable=not one_shot)


def _from_value(value: str | Mapping[str, Any] | Item, index: int, input_field: str) -> Item:
    position = index + 1
    if isinstance(value, Item):
        return value if value.index == index else replace(value, index=index)
    if isinstance(value, str):
        return Item(str(position), index, position, {input_field: value})
    if isinstance(value, Mapping):
        fields = dict(value)
        return Item(item_id(fields, position, f"item {position}"), index, position, fields)
    raise InputError(
        f"expected a string, a mapping or an Item, got {type(value).__name__}",
        where=f"item {position}",
    )


def _digest(ident: str) -> int:
    return int.from_bytes(hashlib.blake2b(ident.encode(), digest_size=8).digest(), "little")


def _missing_field(name: str, fields: Mapping[str, Any]) -> str:
    present = listed(fields, quote=True)
    return f"missing field {clip(repr(name), 80)} (this item has {present or 'no fields'})"
