"""The output folder: results.jsonl, one markdown file per item, report.json, report.md,
report.html and timeline.png, and ``logs/<item>.log`` for items that have a log (the traceback of
the user's own chain); and :func:`rewrite_output`, which renders them again from the run
store alone (``chainfleet report``).

File names for items are made safe whatever the id or topic holds: only ``[a-z0-9-]``, no path
separators, no leading dot, at most ~80 characters, and unique (when the id had to be changed to
be safe, a short hash of the real id is added so two ids never share a file).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chainfleet.errors import ConfigError
from chainfleet.report.agents import TRAJECTORY_CHARS, tool_bars, trajectories
from chainfleet.report.build import build_report
from chainfleet.report.model import RunReport
from chainfleet.report.quality import topic_of
from chainfleet.report.results import (
    PARQUET_MISSING,
    ItemFiles,
    Progress,
    item_files_on,
    parquet_available,
    write_atomic,
    write_results,
)
from chainfleet.report.review import item_reviews
from chainfleet.store.atomic import kill_point
from chainfleet.store.runstore import ItemRecord, RunStore, StoreError

__all__ = [
    "output_complete",
    "rewrite_output",
    "safe_name",
    "store_problem",
    "stored_report",
    "write_output",
]

_UNSAFE = re.compile(r"[^a-z0-9]+")

#: the store's page cache while the output is written (KiB; the run keeps 64 MB)
OUTPUT_CACHE_KIB = 8192


def _slug(text: str, limit: int) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _UNSAFE.sub("-", ascii_text.lower()).strip("-")[:limit].strip("-")


#: names Windows reserves for devices: "con.md" cannot be created there
_DEVICES = frozenset(["con", "prn", "aux", "nul"] + [f"{p}{n}" for p in ("com", "lpt") for n in range(10)])


def safe_name(item_id: str, topic: str | None = None) -> str:
    """A file name (without extension) for an item: ``<id>--<topic words>``, safe and unique.

    Only ``[a-z0-9-]``: no path separators, no dots, never empty, never a Windows device name,
    at most 100 characters. Distinct ids give distinct names: an id that is its own safe form
    (at most 40 characters of ``[a-z0-9-]``) is the name; any other id gets its first 24 safe
    characters, ``---`` and a 128-bit BLAKE2b digest of the whole id, so ids that share a long
    prefix still differ (a chance collision needs about 2**64 ids). ``--`` comes before the
    topic words. (A slug never holds
    ``--`` and topic words never start with ``-``, so the parts cannot be confused.)

    >>> safe_name("7", "Solar power in Kenya")
    '7--solar-power-in-kenya'
    >>> safe_name("../../etc/passwd").startswith("etc-passwd---")
    True
    """
    slug_id = _slug(item_id, 40)
    name = slug_id or "item"
    if slug_id != item_id or slug_id in _DEVICES:
        digest = hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        name = (slug_id[:24].strip("-") or "item") + "---" + digest
    topic_slug = _slug(topic, 36) if topic else ""
    if topic_slug and topic_slug != slug_id:
        name += "--" + topic_slug
    return name


def write_output(
    out: Path,
    report: RunReport,
    *,
    item_files: ItemFiles | bool = "auto",
    report_json: bool = True,
    progress: Progress | None = None,
    parquet: bool = False,
    trajectory_chars: int = TRAJECTORY_CHARS,
) -> None:
    """Write the run's output folder from its report and store; streams, never loads it whole.

    One pass over the store writes results.jsonl, results.parquet (with ``parquet``: it needs
    pyarrow, the ``parquet`` extra) and, by
    ``item_files`` (``auto``: only for runs of at most 10,000 items; ``all``; ``none``), one
    markdown file per item (see :mod:`chainfleet.report.results`; an agent's trajectory with
    texts clipped to ``trajectory_chars``); then report.json, report.md,
    timeline.png and report.html. Every file is written under a temporary name and moved into
    place, so a reader (or a run killed or interrupted while writing) never sees half a file.
    The store records whether the output was written to its end (``chainfleet runs`` says
    when not; ``chainfleet report OUT`` writes it again).
    """
    from chainfleet.report.markdown import item_markdown

    out.mkdir(parents=True, exist_ok=True)
    store = report.store
    if store is not None:
        store.set_output(report.run_id, "writing")
        # one pass in order reads each page once: a big page cache only holds memory
        store.db.execute(f"PRAGMA cache_size=-{OUTPUT_CACHE_KIB}")
    kill_point("output-started")  # tests: killed as the output phase begins
    input_field = report.input_field

    def item_file(record: ItemRecord) -> tuple[str, str]:
        topic = topic_of(record.input, input_field)
        return f"{safe_name(record.id, topic)}.md", item_markdown(record, report.stages_order, topic)

    write_results(
        out,
        report.results(),
        stages=report.stages_order,
        total=report.items_total,
        item_file=item_file if item_files_on(item_files, report.items_total) else None,
        reviews=item_reviews(store) if store is not None else {},
        progress=progress,
        parquet=parquet,
        trajectories=None if store is None else trajectories(store, report.run_id, chars=trajectory_chars),
    )
    kill_point("output-results")  # tests: results.jsonl written, the reports not yet
    if store is not None:
        _write_logs(out / "logs", store, report.run_id)
    if report_json:
        write_atomic(out / "report.json", report.to_json() + "\n")
    write_atomic(out / "report.md", report.to_markdown())
    png = _write_timeline(out / "timeline.png", report)
    kill_point("output-html")  # tests: everything but report.html
    write_atomic(out / "report.html", _html(report, png))
    if store is not None:
        store.set_output(report.run_id, "written")


def output_complete(out: Path, run: Mapping[str, Any]) -> bool:
    """Whether ``out`` holds the whole output of ``run`` (a row of ``RunStore.runs()``): the
    store says it was written to its end, and results.jsonl (one line per item of the run),
    report.json, report.md, report.html and timeline.png are all there.
    A run killed while writing it, or a file deleted since, is not complete:
    :func:`rewrite_output` writes it again."""
    if run.get("output") != "written":
        return False
    names = ["results.jsonl", "report.json", "report.md", "report.html", "timeline.png"]
    if not all((out / name).is_file() for name in names):
        return False
    lines = 0
    with open(out / "results.jsonl", "rb") as results:  # JSON escapes every newline in a value
        while chunk := results.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines == sum(int(count) for count in (run.get("items") or {}).values())


def _write_logs(folder: Path, store: RunStore, run_id: str) -> None:
    """``logs/<item>.log``: each item's log (the traceback of the user's own chain, a child's
    stderr), for the items that have one."""
    for item_id, text in store.journal.logs(run_id):
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{safe_name(item_id)}.log", text)


def _write_timeline(path: Path, report: RunReport) -> Path:
    """timeline.png from every call in the store."""
    from chainfleet.report.chart import timeline_png

    calls = report.store.calls(report.run_id) if report.store is not None else iter(())
    tools = tool_bars(report.store, report.run_id) if report.store is not None and report.agents else iter(())
    tmp = path.with_name(path.name + ".tmp")
    title = f"Run {report.run_id}: {report.pipeline}"
    try:
        timeline_png(
            calls,
            tmp,
            title=title,
            stages_order=report.stages_order,
            concurrency=report.concurrency,
            tools=tools,
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _html(report: RunReport, png: Path | None) -> str:
    from chainfleet.report.html import report_html
    from chainfleet.report.trajectory_view import trajectory_views

    views: list[dict[str, Any]] = []
    if report.agents and report.store is not None:
        views = trajectory_views(report.store, report.run_id, report.results())
    return report_html(
        report.to_dict(),
        png_path=png,
        items=report.results(),
        stages_order=report.stages_order,
        input_field=report.input_field,
        trajectories=views,
    )


def rewrite_output(
    out: Path,
    *,
    run_id: str | None = None,
    item_files: ItemFiles | bool = "auto",
    progress: Progress | None = None,
    parquet: bool = False,
) -> RunReport:
    """Write ``out``'s reports again from its run store alone (``out/run.db``), calling no model.

    The latest run in the store, or ``run_id``. Rewrites every file: results.jsonl, the item
    files, report.json, report.md, timeline.png and report.html, all built from the store
    alone (:func:`chainfleet.report.build.build_report`), so they give the numbers the run
    reported when it ended, and a run that never ended (killed, or still running) is reported
    from what it committed. Raises
    ``ConfigError`` for a missing folder or store, a file that is not a run store, or an unknown
    run. The returned report's store is closed.
    """
    if not out.is_dir():
        raise ConfigError("no such folder", where=str(out))
    if parquet and not parquet_available():
        raise ConfigError(PARQUET_MISSING, where="--parquet")
    path = out / "run.db"
    if not path.is_file():
        raise ConfigError("no run store here (run.db not found)", where=str(out))
    try:
        store = RunStore.open(path)
    except StoreError as exc:
        raise ConfigError(store_problem(exc), where=str(path)) from exc
    with store:
        runs = store.runs()
        if not runs:
            raise ConfigError("the run store holds no run", where=str(path))
        chosen = [r for r in runs if r["run_id"] == run_id] if run_id else runs[-1:]
        if not chosen:
            known = ", ".join(r["run_id"] for r in runs[-5:])
            raise ConfigError(f"no run {run_id!r} in this store (its runs: {known})", where=str(path))
        report = stored_report(store, chosen[0])
        write_output(out, report, item_files=item_files, progress=progress, parquet=parquet)
    report.store = None
    return report


def store_problem(exc: StoreError) -> str:
    """A StoreError as one message that says what the file is not."""
    text = str(exc)
    return text if text.startswith("not a chainfleet run store") else f"not a chainfleet run store: {text}"


def stored_report(store: RunStore, run: Mapping[str, Any]) -> RunReport:
    """The report of ``run`` (a row of ``store.runs()``), built from the store alone."""
    return build_report(store, run["run_id"])
