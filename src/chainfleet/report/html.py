"""report.html: one self-contained page a person reads in a minute.

Inline CSS, the timeline PNG embedded as a ``data:`` URI, no scripts and no external assets, so
the file can be mailed or attached as it is. Top to bottom: the headline (the same lines as
report.md's), the failures with their reasons, the timeline, where the time went, per-stage
latency, achieved rates against the limits, the sessions of a resumed run, the batch and gate
sections when those features ran, and one row per item (the first ``item_cap``).

The page is the Jinja2 template ``templates/report.html`` shipped with the package, rendered
with autoescape on: everything that comes from data (topics, ids, error messages, model names)
is escaped, since a topic may well be ``<script>``. This module only turns the report dict into
the values the template shows (numbers with thousands separators).

Example::

    page = report_html(report.to_dict(), png_path=out / "timeline.png", items=report.results(),
                       stages_order=report.stages_order, input_field=report.input_field)
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from chainfleet.config import user_cache
from chainfleet.limits.facts import limit_lines
from chainfleet.report.batch import batch_lines
from chainfleet.report.duration import fmt_duration
from chainfleet.report.gates import gate_tables
from chainfleet.report.markdown import TIME_SPLIT_NOTE, headline, time_split
from chainfleet.report.quality import topic_of
from chainfleet.report.routes import routes_lines
from chainfleet.store.runstore import ItemRecord

__all__ = ["report_html"]

#: rows of the per-item and failure tables; the rest are counted, and are in results.jsonl
ITEM_CAP = 200
MESSAGE_CHARS = 300


class _CompiledTemplates(jinja2.FileSystemBytecodeCache):
    """Jinja2's compiled templates kept between runs, keyed by each template's source (an
    edited template compiles again); a cache that cannot be written is only skipped."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _compiled_templates() -> jinja2.BytecodeCache | None:
    """The user's cache folder for compiled templates (``$XDG_CACHE_HOME/chainfleet/jinja2``,
    else ``~/.cache/...``): parsing and compiling report.html costs ~60 ms of CPU, a sixth of
    a one-item run's, and loading it compiled ~1 ms. None where the folder cannot be made."""
    try:
        folder = user_cache("jinja2")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: no home folder to be found
        return None
    return _CompiledTemplates(str(folder))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("chainfleet.report", "templates"),
        autoescape=True,  # a topic holding <script> is shown, never run
        undefined=jinja2.StrictUndefined,  # a misspelt name in the template is an error
        keep_trailing_newline=True,
        bytecode_cache=_compiled_templates(),
    )
    env.filters["num"] = _num
    return env


def _num(value: object) -> str:
    """A count with thousands separators (12,345); anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.0f}" if isinstance(value, int) or value.is_integer() else f"{value:,.2f}"


def report_html(
    report: Mapping[str, Any],
    *,
    png_path: str | Path | None = None,
    items: Iterable[ItemRecord] | None = None,
    stages_order: Sequence[str] | None = None,
    input_field: str = "input",
    item_cap: int = ITEM_CAP,
    trajectories: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The page for one run's report dict (``report.json``'s content).

    ``items`` (the run's records in input order, e.g. ``report.results()``) gives the per-item
    table its topics, status and errors; only the first ``item_cap`` are read. Without it the
    table comes from the report's quality rows. ``stages_order`` orders the stage table (a dict
    read back from JSON may have lost the pipeline's order). ``trajectories``: a few items'
    agent conversations (:func:`chainfleet.report.trajectory_view.trajectory_views`), shown
    as conversations after the agents' figures.
    """
    page = (
        _environment()
        .get_template("report.html")
        .render(
            title=f"Run {report.get('run_id', '?')}: {report.get('pipeline', '')}",
            tiles=_tiles(report),
            headline=[_md(line) for line in headline(report)],
            failures=_failures(report, item_cap),
            timeline=_timeline(png_path),
            split=_split(report),
            split_note=TIME_SPLIT_NOTE,
            wall=fmt_duration(report.get("wall_seconds", 0.0)),
            stages=_stages(report, stages_order),
            rates=_rates(report),
            sessions=_sessions(report),
            gates=gate_tables(report.get("gates")),
            extra_sections=_extra_sections(report),
            agents=_agents(report),
            trajectories=list(trajectories),
            quality=_quality(report),
            items=_items(report, items, input_field=input_field, cap=item_cap),
            wall_clock_note=report.get("wall_clock_note", ""),
        )
    )
    return page.strip() + "\n"


_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _md(line: str) -> Markup:
    """A headline line: escaped, then its ``**bold**`` made <strong>."""
    return Markup(_BOLD.sub(r"<strong>\1</strong>", str(escape(line))))


def _over(rates: Mapping[str, Any]) -> str:
    """The span the achieved rates are over, in words."""
    if rates.get("rates_over") == "calls sent":
        return "from the first call sent to the last"
    return "over the wall time"


def _speed_tile(
    speedup: float | None, saved: float | None, d: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The time-saved tile; a run slower than one at a time says so, never "-6611%"; a run at
    concurrency 1 ran one at a time (nothing to compare); an uncertain figure says so."""
    d = d or {}
    if d.get("concurrency") == 1 and d.get("concurrency_mode") != "auto":
        return {"big": "1 at a time", "small": "ran one at a time: nothing to compare", "cls": ""}
    if speedup is not None and (d.get("sequential_estimate") or {}).get("uncertain"):
        return {"big": f"~{speedup:,.2f}x", "small": "uncertain: see the range below", "cls": ""}
    if speedup is not None and speedup < 1:
        return {"big": f"{speedup:,.2f}x", "small": "slower than one at a time", "cls": "bad"}
    return {
        "big": "-" if saved is None else f"{saved:,.1f}%",
        "small": "time saved" + ("" if speedup is None else f" ({speedup:,.2f}x)"),
        "cls": "good" if saved else "",
    }


def _tiles(d: Mapping[str, Any]) -> list[dict[str, str]]:
    items = d.get("items", {})
    ok, total = items.get("succeeded", 0), items.get("total", 0)
    saved, speedup, cost = d.get("time_saved_pct"), d.get("speedup"), d.get("cost_usd")
    return [
        {"big": f"{ok:,} / {total:,}", "small": "items succeeded", "cls": "good" if ok == total else "bad"},
        {
            "big": fmt_duration(d.get("wall_seconds", 0.0)),
            "small": "wall time in batch mode"  # its calls waited for batches: no one-at-a-time figure
            if d.get("batch")
            else f"wall time; one at a time {fmt_duration(d.get('sequential_seconds', 0.0))}",
            "cls": "",
        },
        _speed_tile(speedup, saved, d),
        {"big": "unknown" if cost is None else f"${cost:,.4f}", "small": "cost", "cls": ""},
    ]


def _failures(d: Mapping[str, Any], cap: int) -> dict[str, Any]:
    failures = d.get("failures", [])
    failed = d.get("items", {}).get("failed", 0)
    rows = [
        {
            "id": f.get("id"),
            "stage": f.get("stage"),
            "type": f.get("type"),
            "message": _clip(f.get("message", "")),
        }
        for f in failures[:cap]
    ]
    return {"count": failed, "rows": rows, "more": failed - min(len(failures), cap)}


def _clip(text: object, limit: int = MESSAGE_CHARS) -> str:
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _timeline(png_path: str | Path | None) -> str | None:
    if png_path is None or not Path(png_path).is_file():
        return None
    return base64.b64encode(Path(png_path).read_bytes()).decode("ascii")


def _split(d: Mapping[str, Any]) -> list[dict[str, str]]:
    split = time_split(d)
    total = sum(seconds for _, seconds in split)
    return [
        {
            "label": label,
            "seconds": f"{seconds:,.2f}",
            "share": f"{100 * seconds / total if total > 0 else 0.0:.1f}",
        }
        for label, seconds in split
    ]


def _stages(d: Mapping[str, Any], order: Sequence[str] | None) -> list[dict[str, Any]]:
    stages = d.get("stages", {})
    names = [s for s in order or [] if s in stages] + [s for s in stages if s not in (order or [])]
    rows = []
    for name in names:
        s = stages.get(name, {})
        rows.append(
            {
                "name": name,
                "calls": s.get("calls", 0),
                "failed": s.get("failed", 0),
                "p50": f"{s.get('p50_seconds', 0):,.3f}",
                "p95": f"{s.get('p95_seconds', 0):,.3f}",
                "max": f"{s.get('max_seconds', 0):,.3f}",
            }
        )
    return rows


def _rates(d: Mapping[str, Any]) -> dict[str, Any]:
    rates = d.get("rates", {})
    calls = d.get("calls", {})
    lines = [
        f"{calls.get('total', 0):,} calls: {calls.get('succeeded', 0):,} succeeded, "
        f"{calls.get('retried', 0):,} retried, {calls.get('rate_limited', 0):,} rate-limited (429), "
        f"{calls.get('failed', 0):,} failed for good "
        f"({calls.get('failed_attempts', calls.get('failed', 0)):,} failed attempts)."
    ]
    if rates.get("achieved_rpm") is not None:
        attempts = rates.get("attempts_rpm")
        beside = "" if attempts is None else f" (attempts: {attempts:,.0f}/min)"
        lines.append(
            f"Achieved {_over(rates)}: {rates['achieved_rpm']:,.0f} successful requests/min{beside} "
            f"and {rates.get('achieved_tpm') or 0:,.0f} tokens/min; {rates.get('rate_limited_pct', 0)}% of "
            "attempts were rate-limited."
        )
    models = [
        {
            "spec": spec,
            "rpm": _limit(m.get("rpm_limit")),
            "tpm": _limit(m.get("tpm_limit")),
            "how": "learned from headers" if m.get("learned") else "configured",
            "cooldowns": m.get("cooldowns", 0),
        }
        for spec, m in rates.get("models", {}).items()
    ]
    return {"lines": lines, "models": models, "facts": limit_lines(rates.get("models") or {})}


def _limit(value: float | None) -> str:
    return "none" if value is None else f"{value:,.0f}"


def _sessions(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    def when(stamp: float | None) -> str:
        return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))

    return [
        {
            "session": s.get("session"),
            "started": when(s.get("started")),
            "ended": when(s.get("ended")),
            "status": s.get("status"),
            "active": fmt_duration(s.get("active_seconds", 0.0)),
            "calls": s.get("calls", 0),
            "items": s.get("items_finished", 0),
        }
        for s in d.get("sessions") or []
    ]


def _extra_sections(d: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Sections of features that ran, as lines: batch mode, routes (gates have tables of their
    own)."""
    sections = []
    if batch := batch_lines(d.get("batch")):
        sections.append({"title": "Batches", "lines": batch})
    if routes := routes_lines(d.get("routes")):
        sections.append({"title": "Routes", "lines": [line.strip() for line in routes]})
    return sections


def _agents(d: Mapping[str, Any]) -> dict[str, Any] | None:
    """The agents section's tables (None: no agent stage ran)."""
    section = d.get("agents")
    if not section:
        return None
    stages = [{"name": name, **figures} for name, figures in section.get("stages", {}).items()]
    for stage in stages:
        cost = stage.get("cost_usd")
        stage["cost"] = "unknown" if cost is None else f"${cost:.4f}"
    tools = [{"name": name, **figures} for name, figures in section.get("tools", {}).items()]
    return {"stages": stages, "tools": tools}


def _quality(d: Mapping[str, Any]) -> dict[str, Any] | None:
    quality = d.get("quality", {})
    return quality if quality.get("items") else None


def _items(
    d: Mapping[str, Any], items: Iterable[ItemRecord] | None, *, input_field: str, cap: int
) -> dict[str, Any]:
    total = d.get("items", {}).get("total", 0)
    quality = d.get("quality", {})
    if items is not None:
        rows = [_item_row(r, input_field) for r in _first(items, cap)]
    else:
        rows = [_quality_row(q) for q in quality.get("per_item", [])[:cap]]
        total = quality.get("items", len(rows))
    return {"rows": rows, "more": total - len(rows)}


def _first(items: Iterable[ItemRecord], cap: int) -> list[ItemRecord]:
    """The first ``cap`` records; a generator (a store cursor) is closed, not read to its end."""
    it = iter(items)
    try:
        return list(islice(it, cap))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _item_row(record: ItemRecord, input_field: str) -> dict[str, Any]:
    q = record.quality or {}
    err = record.error
    return {
        "id": record.id,
        "topic": _clip(topic_of(record.input, input_field) or "", 120),
        "error": None
        if not err
        else {
            "stage": err.get("stage"),
            "type": err.get("type"),
            "message": _clip(err.get("message", ""), 160),
        },
        "status": record.status,
        "score": q.get("score", ""),
        "words": _num(q["words"]) if "words" in q else "",
        "readability": q.get("readability", ""),
        "covered": _covered(q),
        "calls": record.attempts,
        "seconds": f"{record.seconds:,.2f}",
    }


def _quality_row(q: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": q.get("id"),
        "topic": "",
        "error": None,
        "status": "succeeded",
        "score": q.get("score", ""),
        "words": _num(q["words"]) if "words" in q else "",
        "readability": q.get("readability", ""),
        "covered": _covered(q),
        "calls": "",
        "seconds": "",
    }


def _covered(q: Mapping[str, Any]) -> str:
    if "topic_covered" not in q:
        return ""
    share = q.get("topic_coverage")
    return ("yes" if q["topic_covered"] else "no") + (f" ({share:.0%})" if share is not None else "")
