"""Streaming input readers: plain text, JSON Lines and CSV files, or any Python iterable.

An input is a sequence of :class:`Item` objects, each one topic, object or row with a stable
``id``. Files are streamed: iterating an :class:`InputSource` reads one line at a time, so a
1,000,000-line file takes as little memory as a ten-line one, and every iteration re-opens the
file and reads it again from the top.

Formats, chosen from the file's extension:

========================================  =============================================  =====
extension                                 one item is                                    id
========================================  =============================================  =====
``.txt`` ``.text`` ``.md`` ``.lst``, none  a non-blank line not starting with ``#``        (1)
``.jsonl`` ``.ndjson``                    a JSON object on its own line                  (2)
``.csv``, ``.tsv`` (tab-separated)        a row under the header row                     (2)
========================================  =============================================  =====

(1) the physical line number, counting blank and comment lines, so ids do not move when a
comment is added below. (2) the ``id`` field or column when there is one, else the line number
(JSONL) or the row number after the header, 1-based (CSV).

Every file is read as UTF-8 (a byte-order mark is tolerated). Any valid JSON is carried safely,
within limits that keep one poison line from taking the run down, each a ``path:line`` error:
a line of at most :data:`MAX_LINE_BYTES`, integers of at most :data:`MAX_INT_DIGITS` digits,
values nested at most :data:`MAX_DEPTH` deep. A lone surrogate escape (``"\ud800"``, valid
JSON but not text that can be written as UTF-8) is replaced with U+FFFD, the replacement
character, with a warning naming the line: the item still runs, and every file written from
it can be read back. Anything that cannot be read
raises :class:`~chainfleet.errors.InputError` whose ``where`` is ``"path:line"``, so a user can
jump to it in an editor. Iteration checks each line as it meets it; :meth:`InputSource.scan`
reads the whole input once up front and also catches what only a full pass can see (duplicate
ids, missing fields, an empty input)::

    source = open_input("topics.txt", input_field="topic")
    total = source.scan(required={"topic"})   # raises InputError at the first bad line
    for item in source:                        # streams again, one item at a time
        print(item.id, item.fields["topic"])
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal

from chainfleet.errors import ConfigError, InputError

__all__ = ["InputSource", "Item", "items_from", "open_input"]

Format = Literal["txt", "jsonl", "csv", "iterable"]

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
}
_ACCEPTED = (
    ".txt, .text, .md, .lst or no extension (one input per line), "
    ".jsonl or .ndjson (one JSON object per line), "
    ".csv or .tsv (a header row, then one row per input)"
)

#: the longest line read (bytes): past it, a clear error rather than gigabytes read into memory
MAX_LINE_BYTES = 16 * 1024 * 1024
#: the most digits of one JSON integer (Python refuses to convert past 4,300 anyway)
MAX_INT_DIGITS = 1000
#: the deepest nesting of JSON arrays and objects in one line
MAX_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")
_log = logging.getLogger("chainfleet.inputs.source")
_WARNED: set[str] = set()

#: a carriage return that is not part of "\r\n": an old-style line break on its own
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")

#: (item, line) pairs: ``line`` is the physical line an error message should point at
_Stream = Iterator[tuple["Item", int]]
#: what a stream calls with a line it cannot read, when asked to go on past it (None: raise)
_OnBad = Callable[[InputError], None] | None

#: validation lists at most this many bad input lines (then "and N more")
MAX_PROBLEMS = 20


@dataclass(frozen=True, slots=True)
class Item:
    """One input: a text line, a JSONL object or a CSV row.

    ``id`` is always a string and stable across runs (see the module docstring for where it
    comes from). ``index`` is the 0-based position among the items yielded, in input order.
    ``line`` is the 1-based physical line for text and JSONL files, the 1-based row number after
    the header for CSV, and the 1-based position for :func:`items_from`. ``fields`` holds what
    templates see: ``{input_field: text}`` for a text line, the object for JSONL, the row (all
    values strings) for CSV.
    """

    id: str
    index: int
    line: int
    fields: dict[str, Any]


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
        stream: Callable[[_OnBad], _Stream],
        ids_may_repeat: bool = True,
        reiterable: bool = True,
    ) -> None:
        self.path = path
        self.format: Format = format
        self.fields = fields
        self.reiterable = reiterable
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
        for other, other_line in self._stream(_skip):
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
        }.get(self.format, "no inputs: the iterable is empty")


def open_input(
    path: str | os.PathLike[str], *, input_field: str = "input", format: str | None = None
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
    file = Path(path)
    kind, delimiter = _resolve_format(file, format)
    _open(file).close()  # fail now, not at the first iteration
    if kind == "txt":
        return InputSource(
            path=file,
            format="txt",
            fields=frozenset({input_field}),
            stream=lambda on_bad: _read_txt(file, input_field),
            ids_may_repeat=False,
        )
    if kind == "jsonl":
        return InputSource(
            path=file, format="jsonl", fields=None, stream=lambda on_bad: _read_jsonl(file, on_bad)
        )
    header = _read_header(file, delimiter)
    return InputSource(
        path=file,
        format="csv",
        fields=frozenset(header),
        stream=lambda on_bad: _read_csv(file, delimiter, header, on_bad),
        ids_may_repeat="id" in header,
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

    def stream(on_bad: _OnBad) -> _Stream:
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
        return Item(_item_id(fields, position, f"item {position}"), index, position, fields)
    raise InputError(
        f"expected a string, a mapping or an Item, got {type(value).__name__}",
        where=f"item {position}",
    )


# -- formats -----------------------------------------------------------------------------------


def _resolve_format(path: Path, format: str | None) -> tuple[Format, str]:
    if format is not None:
        key = format.lower().lstrip(".")
        if key not in _FORMATS:
            raise InputError(f"unknown input format {format!r}; accepted: {_ACCEPTED}", where=str(path))
        return _FORMATS[key]
    suffix = path.suffix.lower()
    if suffix[1:] not in _FORMATS:
        raise InputError(
            f"cannot tell the input format from the extension {suffix!r}; accepted: {_ACCEPTED}",
            where=str(path),
        )
    return _FORMATS[suffix[1:]]


def _read_txt(path: Path, field: str) -> _Stream:
    index = 0
    for lineno, text in _lines(path):
        text = text.strip()
        if text and not text.startswith("#"):
            yield Item(str(lineno), index, lineno, {field: text}), lineno
            index += 1


def _skip(problem: InputError) -> None:
    """Go on past a bad line (when reading again for something else)."""


def _read_jsonl(path: Path, on_bad: _OnBad = None) -> _Stream:
    index = 0
    for lineno, text in _lines(path):
        if not text.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            value = _parse_json(text, where)
            if not isinstance(value, dict):
                raise InputError(f"expected a JSON object, got {_json_type(value)}", where=where)
            item = Item(_item_id(value, lineno, where), index, lineno, value)
        except InputError as exc:
            if on_bad is None:
                raise
            on_bad(exc)
            continue
        yield item, lineno
        index += 1


def _read_header(path: Path, delimiter: str) -> tuple[str, ...]:
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
            raise InputError(f"the header names the column {name!r} twice", where=f"{path}:{line}")
    return names


def _read_csv(path: Path, delimiter: str, header: tuple[str, ...], on_bad: _OnBad = None) -> _Stream:
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
            item = Item(_item_id(fields, row, where), index, row, fields)
        except InputError as exc:
            if on_bad is None:
                raise
            on_bad(exc)
            continue
        yield item, line
        index += 1


def _csv_rows(path: Path, delimiter: str) -> Generator[tuple[int, list[str]], None, None]:
    """Yield (first physical line, cells) for every CSV record, blank ones included."""
    reader = csv.reader((text for _, text in _lines(path)), delimiter=delimiter, strict=True)
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


# -- shared helpers ----------------------------------------------------------------------------


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError("no such input file", where=str(path)) from None
    except OSError as exc:
        if path.is_dir():  # IsADirectoryError, or PermissionError on Windows
            raise InputError("is a directory, not an input file", where=str(path)) from None
        raise InputError(f"cannot read the input file: {exc.strerror or exc}", where=str(path)) from exc


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _TooLong(f"an integer of {len(text.lstrip('-')):,} digits (at most {MAX_INT_DIGITS:,})")
    return int(text)


class _TooLong(ValueError):
    pass


def _parse_json(text: str, where: str) -> Any:
    """One JSONL line, within the limits; lone surrogates replaced (with a warning)."""
    try:
        value = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})", where=where) from None
    except _TooLong as exc:
        raise InputError(f"not accepted: {exc}", where=where) from None
    except RecursionError:
        raise InputError(f"not accepted: nested more than {MAX_DEPTH} levels deep", where=where) from None
    if _depth_over(value, MAX_DEPTH):
        raise InputError(f"not accepted: nested more than {MAX_DEPTH} levels deep", where=where)
    if "\\u" in text and _SURROGATE.search(json.dumps(value, ensure_ascii=False)):
        if where not in _WARNED:
            _WARNED.add(where)
            _log.warning("%s: a lone surrogate escape (\\ud800-\\udfff) replaced with U+FFFD", where)
        value = _replace_surrogates(value)
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects more than ``limit`` deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text with its line ending) for each physical line of a UTF-8 file.

    Lines end at "\\n", "\\r\\n" or a lone "\\r", like universal newlines, so that CSV records
    and line numbers agree with what an editor shows. The file is decoded line by line, which
    is what lets a bad byte be reported with its line number.
    """
    lineno = 0
    with _open(path) as file:
        for raw in iter(lambda: file.readline(MAX_LINE_BYTES + 1), b""):
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise InputError(
                    f"not accepted: a line longer than {MAX_LINE_BYTES // 1024 // 1024} MiB",
                    where=f"{path}:{lineno + 1}",
                )
            if lineno == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                lineno += 1 + raw.count(b"\r", 0, exc.start)
                line_start = raw.rfind(b"\r", 0, exc.start) + 1
                column = len(raw[line_start : exc.start].decode("utf-8")) + 1
                raise InputError(
                    f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column {column} "
                    "(save the file as UTF-8)",
                    where=f"{path}:{lineno}",
                ) from None
            if "\r" in text and _LONE_CR.search(text):
                for piece in _LONE_CR.split(text):
                    if piece:
                        lineno += 1
                        yield lineno, piece
            else:
                lineno += 1
                yield lineno, text


def _item_id(fields: Mapping[str, Any], default: int, where: str) -> str:
    """The item's id: its ``id`` field as a string, else ``default`` (a line or row number)."""
    if "id" not in fields:
        return str(default)
    value = fields["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(f"id must be a string or a number, got {_json_type(value)}", where=where)
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"id must be a finite number, got {value}", where=where)
    ident = str(value)
    if not ident.strip():
        raise InputError("id is empty", where=where)
    return ident


def _digest(ident: str) -> int:
    return int.from_bytes(hashlib.blake2b(ident.encode(), digest_size=8).digest(), "little")


def _missing_field(name: str, fields: Mapping[str, Any]) -> str:
    present = ", ".join(repr(key) for key in list(fields)[:10])
    more = ", ..." if len(fields) > 10 else ""
    return f"missing field {name!r} (this item has {present or 'no fields'}{more})"


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
