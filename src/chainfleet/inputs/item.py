"""One input and its id: a text line, a JSONL object, a CSV row, or a value given in Python.

Every reader makes :class:`Item` objects, and every reader takes an item's id the same way
(:func:`item_id`): the ``id`` field when there is one, as a string, else a number the reader
chooses (a line or row number, or a position). A bad id is an
:class:`~chainfleet.errors.InputError` naming where it was::

    item_id({"id": 7, "topic": "wind"}, 3, "in.jsonl:3")    # "7"
    item_id({"topic": "wind"}, 3, "in.jsonl:3")             # "3"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chainfleet.errors import InputError

__all__ = ["Item", "item_id", "json_type"]


@dataclass(frozen=True, slots=True)
class Item:
    """One input: a text line, a JSONL object or a CSV row.

    ``id`` is always a string and stable across runs (see :mod:`chainfleet.inputs.source` for
    where it comes from). ``index`` is the 0-based position among the items yielded, in input
    order. ``line`` is the 1-based physical line for text and JSONL files, the 1-based row
    number after the header for CSV, and the 1-based position for
    :func:`~chainfleet.inputs.source.items_from`. ``fields`` holds what templates see:
    ``{input_field: text}`` for a text line, the object for JSONL, the row (all values strings)
    for CSV.
    """

    id: str
    index: int
    line: int
    fields: dict[str, Any]


def item_id(fields: Mapping[str, Any], default: int, where: str) -> str:
    """The item's id: its ``id`` field as a string, else ``default`` (a line or row number)."""
    if "id" not in fields:
        return str(default)
    value = fields["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(f"id must be a string or a number, got {json_type(value)}", where=where)
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"id must be a finite number, got {value}", where=where)
    ident = str(value)
    if not ident.strip():
        raise InputError("id is empty", where=where)
    return ident


def json_type(value: object) -> str:
    """What JSON calls ``value``'s type, for a message: "an object", "a number", "null"..."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
