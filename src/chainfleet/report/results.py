"""The per-item output: results.jsonl, results.parquet and the item files, in one streaming pass.

The store is read once, in input order (:meth:`RunStore.items`), and each record goes to every
writer as it comes, so memory stays flat whatever the run's size and no file is written twice:

- ``results.jsonl``: one JSON object per item (``id``, ``input``, ``status``, ``outputs`` by
  stage, ``error``, ``attempts``, ``seconds``, ``quality``, ``gates``, ``review``, and for an
  agent stage ``trajectory``: each step of its conversation, clipped). Each
  output is there once: the final one is ``outputs[<last stage>]``;
- ``results.parquet`` (``--parquet``; needs the ``parquet`` extra, pyarrow): the same rows as
  columns for data users, written in row groups of :data:`ROW_GROUP` items (``id``, ``index``, ``status``,
  ``input`` and ``error`` as JSON text, ``attempts``, ``seconds``, and one ``output_<stage>``
  column per stage, a structured output as JSON text, and ``trajectory``: an agent's steps as
  JSON text);
- ``items/<id>--<topic>.md``: a readable file per item, by ``item_files``: ``all``, ``none``,
  or ``auto`` (the default: only when the run has at most :data:`ITEM_FILES_AUTO_MAX` items;
  a million small files help nobody and cost minutes).

Each file is written under a ``.tmp`` name and moved into place at the end, so an interrupted
pass (Ctrl-C, SIGTERM: the signal raises here) leaves the previous files, never half a file;
the temporary ones are removed. ``progress(done, total)`` is called every
:data:`PROGRESS_EVERY` items.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal, Protocol

from chainfleet.pipeline.gates import as_text
from chainfleet.store.runstore import ItemRecord

__all__ = [
    "ITEM_FILES_AUTO_MAX",
    "PARQUET_MISSING",
    "ItemFiles",
    "Progress",
    "item_files_on",
    "parquet_available",
    "write_atomic",
    "write_results",
]

ItemFiles = Literal["auto", "all", "none"]
Progress = Callable[[int, int], None]

#: ``--item-files auto`` writes them for runs of at most this many items
ITEM_FILES_AUTO_MAX = 10_000
#: items per parquet row group (a few MB of text: memory stays flat)
ROW_GROUP = 2_000
PROGRESS_EVERY = 1000


def item_files_on(setting: ItemFiles | bool, items: int) -> bool:
    """Whether to write one file per item, for ``--item-files`` and a run of ``items``."""
    if isinstance(setting, bool):
        return setting
    if setting not in ("auto", "all", "none"):
        raise ValueError(f"item files must be auto, all or none, not {setting!r}")
    return setting == "all" or (setting == "auto" and items <= ITEM_FILES_AUTO_MAX)


class _Sink(Protocol):
    def add(self, record: ItemRecord, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


#: characters that some readers take for a line break (``str.splitlines()`` does): escaped in
#: results.jsonl, as JSON allows, so one record is always one line
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"})


def jsonl_line(row: dict[str, Any]) -> str:
    """One JSON Lines record: UTF-8 text kept readable, every line-breaking character escaped."""
    text = json.dumps(row, ensure_ascii=False)
    # an ASCII text (str knows without looking) holds none of them: no pass over it to translate
    return (text if text.isascii() else text.translate(_LINE_BREAKS)) + "\n"


class _Jsonl:
    def __init__(self, path: Path) -> None:
        self.file = path.open("w", encoding="utf-8")

    def add(self, record: ItemRecord, row: dict[str, Any]) -> None:
        self.file.write(jsonl_line(row))

    def close(self) -> None:
        self.file.close()


class _Parquet:
    """results.parquet through pyarrow, a row group at a time."""

    def __init__(self, path: Path, stages: Sequence[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.stages = list(stages)
        fields = [
            ("id", pa.string()),
            ("index", pa.int64()),
            ("status", pa.string()),
            ("input", pa.string()),
            *[(f"output_{stage}", pa.string()) for stage in self.stages],
            ("error", pa.string()),
            ("attempts", pa.int64()),
            ("seconds", pa.float64()),
            ("trajectory", pa.string()),
        ]
        self.schema = pa.schema(fields)
        # the system allocator gives memory back as row groups are written (pyarrow's default
        # keeps it); dictionaries and statistics only where values repeat or are short
        self.pool = pa.system_memory_pool()
        self.writer = pq.ParquetWriter(
            str(path),
            self.schema,
            compression="zstd",
            use_dictionary=["status"],
            write_statistics=["id", "index", "status", "attempts", "seconds"],
            memory_pool=self.pool,
        )
        self.columns: dict[str, list[Any]] = {name: [] for name, _ in fields}

    def add(self, record: ItemRecord, row: dict[str, Any]) -> None:
        c = self.columns
        c["id"].append(record.id)
        c["index"].append(record.index)
        c["status"].append(record.status)
        c["input"].append(json.dumps(record.input, ensure_ascii=False))
        for stage in self.stages:
            value = record.outputs.get(stage)
            c[f"output_{stage}"].append(None if value is None else as_text(value))
        c["error"].append(json.dumps(record.error, ensure_ascii=False) if record.error else None)
        c["attempts"].append(record.attempts)
        c["seconds"].append(round(record.seconds, 6))
        trajectory = row.get("trajectory")
        c["trajectory"].append(None if trajectory is None else json.dumps(trajectory, ensure_ascii=False))
        if len(c["id"]) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.columns["id"]:
            arrays = [self.pa.array(self.columns[f.name], f.type, memory_pool=self.pool) for f in self.schema]
            self.writer.write_table(self.pa.Table.from_arrays(arrays, schema=self.schema))
            for values in self.columns.values():
                values.clear()

    def close(self) -> None:
        self._flush()
        self.writer.close()


#: what to do when results.parquet is asked for without pyarrow
PARQUET_MISSING = "results.parquet needs pyarrow: pip install 'chainfleet[parquet]'"


def parquet_available() -> bool:
    """Whether pyarrow (the ``parquet`` extra) is installed."""
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def write_results(
    out: Path,
    records: Iterable[ItemRecord],
    *,
    stages: Sequence[str],
    total: int,
    item_file: Callable[[ItemRecord], tuple[str, str]] | None,
    reviews: Mapping[str, Any],
    parquet: bool = False,
    progress: Progress | None = None,
    trajectories: Iterator[tuple[int, dict[str, Any]]] | None = None,
) -> list[str]:
    """Write results.jsonl (and results.parquet, and the item files when ``item_file`` gives
    each record's file name and text) in one pass over ``records``; return the files written.

    ``parquet``: results.parquet too. ``trajectories``: (item index, trajectory) in input order,
    each joined to its item's record as ``trajectory``. Interrupted (any exception, a signal's included), it
    removes its temporary files and re-raises: the previous files stay.
    """
    names = ["results.jsonl"] + (["results.parquet"] if parquet else [])
    temps = [out / f"{name}.tmp" for name in names]
    items_dir = out / "items"
    if item_file is not None:
        items_dir.mkdir(exist_ok=True)
    done = 0
    joined = _Join(trajectories)
    try:
        with ExitStack() as stack:
            sinks: list[_Sink] = [_Jsonl(temps[0])]
            if parquet:
                sinks.append(_Parquet(temps[1], stages))
            for sink in sinks:
                stack.callback(sink.close)
            for record in _ordered(records, stages):
                row = record.to_json()
                if record.id in reviews:
                    row["review"] = reviews[record.id]
                trajectory = joined.find(record.index)
                if trajectory is not None:
                    row["trajectory"] = trajectory
                for sink in sinks:
                    sink.add(record, row)
                if item_file is not None and record.status != "skipped":
                    name, text = item_file(record)
                    write_atomic(items_dir / name, text)
                done += 1
                if progress is not None and done % PROGRESS_EVERY == 0:
                    progress(done, total)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    for name, tmp in zip(names, temps, strict=True):
        os.replace(tmp, out / name)
    if progress is not None:
        progress(done, total)
    return names


class _Join:
    """Values keyed by item index, in input order, taken as the records reach them (a merge
    join: memory stays flat)."""

    def __init__(self, pairs: Iterator[tuple[int, Any]] | None) -> None:
        self.pairs = pairs
        self.head = next(pairs, None) if pairs is not None else None

    def find(self, index: int) -> Any:
        while self.pairs is not None and self.head is not None and self.head[0] < index:
            self.head = next(self.pairs, None)
        return self.head[1] if self.head is not None and self.head[0] == index else None


def _ordered(records: Iterable[ItemRecord], stages: Sequence[str]) -> Iterator[ItemRecord]:
    """Each record with the outputs of the pipeline's stages, in its order (an output of a stage
    an earlier version of the pipeline had stays in the store only)."""
    for record in records:
        record.outputs = {s: record.outputs[s] for s in stages if s in record.outputs}
        yield record


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file moved into place: a reader never
    sees half a file, and a signal mid-write leaves none behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # a signal mid-write: no half file left behind
        tmp.unlink(missing_ok=True)
        raise
