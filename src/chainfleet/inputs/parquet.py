"""Parquet inputs: a file, or a folder of them read as one dataset, streamed in row batches.

A data set kept as Parquet (pandas' ``to_parquet``, Hugging Face ``datasets``' ``to_parquet``, a
Spark job's ``part-*.parquet`` folder) is read with pyarrow (the ``parquet`` extra), one row
batch of :data:`BATCH_ROWS` at a time, never whole: a file of ten million rows takes the memory
of one batch. Each row is an item whose fields are the columns; its id is the ``id_column``'s
value (``id`` when there is such a column), else its row number in the data set, from 1. A
folder reads its ``.parquet`` files (at any depth) in name order, as one input whose files must
have the same columns.

A row that cannot be an item is an :class:`~chainfleet.errors.InputError` naming its file and
row, ``data/part-1.parquet:12: id is empty``: an empty or null id, a binary value (not text).
Dates and times become ISO 8601 text and decimals numbers, so every item writes back as JSON.

Example::

    files = parquet_files(Path("data/"))
    columns = parquet_columns(files)             # read from the files' footers only
    for item, row in read_parquet(files, "id", None):
        ...
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from chainfleet.errors import ConfigError, InputError
from chainfleet.inputs.item import Item, item_id
from chainfleet.redact import listed

__all__ = ["BATCH_ROWS", "parquet_columns", "parquet_files", "read_parquet"]

#: rows read at once: the memory a Parquet input takes
BATCH_ROWS = 1024

MISSING = "reading Parquet needs pyarrow: pip install 'chainfleet[parquet]'"


def _pq() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(MISSING, where="--input") from None
    return pq


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of ``path``: itself, or a folder's ``.parquet`` files in name order."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise InputError("a folder with no .parquet files in it", where=str(path))
    return files


def parquet_columns(files: list[Path]) -> frozenset[str]:
    """The columns every file has (from their footers); files that disagree are an error."""
    pq = _pq()
    first: list[str] | None = None
    for file in files:
        try:
            names = list(pq.ParquetFile(file).schema_arrow.names)
        except FileNotFoundError:
            raise InputError("no such input file", where=str(file)) from None
        except Exception as exc:  # pyarrow's ArrowInvalid: not a Parquet file
            raise InputError(f"not a Parquet file: {exc}", where=str(file)) from None
        if first is None:
            first = names
        elif set(names) != set(first):
            raise InputError(
                f"its columns ({listed(names)}) are not those of {files[0].name} ({listed(first)}): "
                "a folder is read as one data set",
                where=str(file),
            )
    return frozenset(first or ())


def read_parquet(files: list[Path], id_column: str | None, on_bad: Any = None) -> Iterator[tuple[Item, int]]:
    """(item, row) for every row of ``files`` in turn, a batch of rows at a time."""
    pq = _pq()
    index = number = 0
    for file in files:
        row = 0
        # pre_buffer=False: pyarrow's default reads every row group's bytes up front (the whole
        # file); without it, each batch's row group is read as the batch is
        for batch in pq.ParquetFile(file, pre_buffer=False).iter_batches(batch_size=BATCH_ROWS):
            for values in batch.to_pylist():
                row += 1
                number += 1
                where = f"{file}:{row}"
                try:
                    fields = {str(k): _plain(v, where, str(k)) for k, v in values.items()}
                    ident = _row_id(fields, id_column, number, where)
                except InputError as exc:
                    if on_bad is None:
                        raise
                    on_bad(exc)
                    continue
                yield Item(ident, index, row, fields), number
                index += 1


def _row_id(fields: Mapping[str, Any], id_column: str | None, number: int, where: str) -> str:
    column = id_column or "id"
    if column not in fields:
        return str(number)
    try:
        return item_id({"id": fields[column]}, number, where)
    except InputError as exc:
        raise InputError(exc.reason.replace("id ", f"id column {column!r} ", 1), where=where) from None


def _plain(value: Any, where: str, column: str) -> Any:
    """A Parquet value as JSON has it."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        raise InputError(f"column {column!r} holds binary data, not text", where=where)
    if isinstance(value, list):
        return [_plain(v, where, column) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where, column) for k, v in value.items()}
    return value
