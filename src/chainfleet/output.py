"""The output folder: results.jsonl, one markdown file per item, report.json, report.md.

File names for items are made safe whatever the id or topic holds: only ``[a-z0-9-]``, no path
separators, no leading dot, at most ~80 characters, and unique (when the id had to be changed to
be safe, a short hash of the real id is added so two ids never share a file).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from pathlib import Path

from .report import RunReport, topic_of
from .store import ItemRecord

__all__ = ["safe_name", "write_output"]

_UNSAFE = re.compile(r"[^a-z0-9]+")


def _slug(text: str, limit: int) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _UNSAFE.sub("-", ascii_text.lower()).strip("-")[:limit].strip("-")


#: names Windows reserves for devices: "con.md" cannot be created there
_DEVICES = frozenset(["con", "prn", "aux", "nul"] + [f"{p}{n}" for p in ("com", "lpt") for n in range(10)])


def safe_name(item_id: str, topic: str | None = None) -> str:
    """A file name (without extension) for an item: ``<id>--<topic words>``, safe and unique.

    Only ``[a-z0-9-]``: no path separators, no dots, never empty, never a Windows device name,
    at most ~95 characters. Distinct ids always give distinct names: an id that is not already
    its own safe form gets ``---`` and a hash of the real id; ``--`` comes before the topic
    words. (A slug never holds ``--`` and topic words never start with ``-``, so the parts
    cannot be confused.)

    >>> safe_name("7", "Solar power in Kenya")
    '7--solar-power-in-kenya'
    >>> safe_name("../../etc/passwd").startswith("etc-passwd---")
    True
    """
    slug_id = _slug(item_id, 40)
    name = slug_id or "item"
    if slug_id != item_id or slug_id in _DEVICES:
        name += "---" + hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    topic_slug = _slug(topic, 40) if topic else ""
    if topic_slug and topic_slug != slug_id:
        name += "--" + topic_slug
    return name


def write_output(out: Path, report: RunReport, *, item_files: bool = True) -> None:
    """Write the run's output folder from its report and store; streams, never loads it whole."""
    from .render import item_markdown

    out.mkdir(parents=True, exist_ok=True)
    items_dir = out / "items"
    if item_files:
        items_dir.mkdir(exist_ok=True)
    final = report.stages_order[-1]
    input_field = report.input_field
    tmp = out / "results.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as results:
        for record in report.results():
            record.outputs = {s: record.outputs[s] for s in report.stages_order if s in record.outputs}
            results.write(json.dumps(record.to_json(final), ensure_ascii=False) + "\n")
            if item_files and record.status != "skipped":
                topic = topic_of(record.input, input_field)
                path = items_dir / f"{safe_name(record.id, topic)}.md"
                path.write_text(item_markdown(record, report, topic), encoding="utf-8")
    os.replace(tmp, out / "results.jsonl")
    _write_atomic(out / "report.json", report.to_json() + "\n")
    _write_atomic(out / "report.md", report.to_markdown())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def record_files(out: Path, record: ItemRecord, topic: str | None) -> Path:
    """Where an item's markdown file is (for messages and tests)."""
    return out / "items" / f"{safe_name(record.id, topic)}.md"
