"""Reading an input file safely: its lines, as UTF-8, and JSON within limits.

Every file reader goes through :func:`lines`, which decodes one physical line at a time (so a
bad byte is reported with its line and column) and ends lines where an editor does: at
``"\\n"``, ``"\\r\\n"`` or a lone ``"\\r"``. A byte-order mark is tolerated.

Any valid JSON is carried safely, within limits that keep one poison line from taking the run
down, each an :class:`~chainfleet.errors.InputError` naming ``path:line``: a line of at most
:data:`MAX_LINE_BYTES` (past it, the line is refused without being read whole), integers of at
most :data:`MAX_INT_DIGITS` digits, values nested at most :data:`MAX_DEPTH` deep. A lone
surrogate escape (``"\\ud800"``, valid JSON but not text that can be written as UTF-8) is
replaced with U+FFFD, the replacement character, with one warning naming the line::

    for lineno, text in lines(Path("in.jsonl")):
        value = parse_json(text, f"in.jsonl:{lineno}")
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from chainfleet.errors import InputError

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "MAX_LINE_BYTES", "STDIN", "lines", "open_file", "parse_json"]

#: the path an input read from standard input goes by (``-i -``), in messages as ``<stdin>:3``
STDIN = Path("<stdin>")

#: the longest line read (bytes): past it, a clear error rather than gigabytes read into memory
MAX_LINE_BYTES = 16 * 1024 * 1024
#: the most digits of one JSON integer (Python refuses to convert past 4,300 anyway)
MAX_INT_DIGITS = 1000
#: the deepest nesting of JSON arrays and objects in one line
MAX_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")
#: (the name it had before this module was split from ``source``: logging settings may name it)
_log = logging.getLogger("chainfleet.inputs.source")
_WARNED: set[str] = set()

#: a carriage return that is not part of "\r\n": an old-style line break on its own
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def open_file(path: Path) -> IO[bytes]:
    """``path`` opened for reading bytes; a missing file, a folder, no permission: ``InputError``.
    :data:`STDIN` is standard input (a duplicate of it, so closing it leaves ``sys.stdin`` be)."""
    if path == STDIN:
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
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


def parse_json(text: str, where: str) -> Any:
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


def lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text with its line ending) for each physical line of a UTF-8 file.

    Lines end at "\\n", "\\r\\n" or a lone "\\r", like universal newlines, so that CSV records
    and line numbers agree with what an editor shows. The file is decoded line by line, which
    is what lets a bad byte be reported with its line number.
    """
    lineno = 0
    with open_file(path) as file:
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
