"""report.html: one self-contained page a person reads in a minute.

Inline CSS, the timeline PNG embedded as a ``data:`` URI, no scripts and no external assets, so
the file can be mailed or attached as it is. Top to bottom: the headline (the same lines as
report.md's), the failures with their reasons, the timeline, where the time went, per-stage
latency, achieved rates against the limits, and one row per item (the first ``item_cap``).

Everything that comes from data (topics, ids, error messages, model names) is escaped: a topic
may well be ``<script>``.

Example::

    page = report_html(report.to_dict(), png_path=out / "timeline.png", items=report.results(),
                       stages_order=report.stages_order, input_field=report.input_field)
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from .gate_report import gate_html
from .render import TIME_SPLIT_NOTE, headline, time_split
from .report import fmt_seconds, topic_of
from .store import ItemRecord

__all__ = ["report_html"]

#: rows of the per-item and failure tables; the rest are counted, and are in results.jsonl
ITEM_CAP = 200
MESSAGE_CHARS = 300

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.tiles { display: flex; flex-wrap: wrap; gap: .8em; margin: 1em 0; }
.tile { flex: 1 1 200px; border: 1px solid #ddd; border-radius: 8px; padding: .7em 1em; }
.tile .big { font-size: 1.7em; font-weight: 650; }
.tile .small { color: #555; font-size: .9em; }
.good { color: #00734d; } .bad { color: #b3400a; }
ul.headline li { margin: .2em 0; }
table { border-collapse: collapse; width: 100%; font-size: .92em; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f6f6f6; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fff4ee; }
.bar { background: #eee; height: .8em; width: 12em; border-radius: 3px; }
.bar span { display: block; height: 100%; background: #0072B2; border-radius: 3px; }
.note { color: #555; font-size: .9em; }
img.timeline { width: 100%; height: auto; border: 1px solid #ddd; }
code { font-size: .95em; }
"""


def report_html(
    report: Mapping[str, Any],
    *,
    png_path: str | Path | None = None,
    items: Iterable[ItemRecord] | None = None,
    stages_order: Sequence[str] | None = None,
    input_field: str = "input",
    item_cap: int = ITEM_CAP,
) -> str:
    """The page for one run's report dict (``report.json``'s content).

    ``items`` (the run's records in input order, e.g. ``report.results()``) gives the per-item
    table its topics, status and errors; only the first ``item_cap`` are read. Without it the
    table comes from the report's quality rows. ``stages_order`` orders the stage table (a dict
    read back from JSON may have lost the pipeline's order).
    """
    title = f"Run {report.get('run_id', '?')}: {report.get('pipeline', '')}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _tiles(report),
        '<ul class="headline">' + "".join(f"<li>{_md(line)}</li>" for line in headline(report)) + "</ul>",
        _failures(report, item_cap),
        _timeline(png_path),
        _time_split(report),
        _stages(report, stages_order),
        gate_html(report.get("gates")),
        _rates(report),
        _items(report, items, input_field=input_field, cap=item_cap),
        f'<p class="note">{_e(report.get("wall_clock_note", ""))}. '
        "Written by chainfleet; the numbers are report.json's.</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _md(line: str) -> str:
    """A headline line: escaped, then its ``**bold**`` made <strong>."""
    return _BOLD.sub(r"<strong>\1</strong>", _e(line))


def _tiles(d: Mapping[str, Any]) -> str:
    items = d.get("items", {})
    ok, total = items.get("succeeded", 0), items.get("total", 0)
    saved, speedup, cost = d.get("time_saved_pct"), d.get("speedup"), d.get("cost_usd")
    tiles = [
        (f"{ok} / {total}", "items succeeded", "good" if ok == total else "bad"),
        (
            fmt_seconds(d.get("wall_seconds", 0.0)),
            f"wall time; one at a time {fmt_seconds(d.get('sequential_seconds', 0.0))}",
            "",
        ),
        (
            "-" if saved is None else f"{saved:.1f}%",
            "time saved" + ("" if speedup is None else f" ({speedup:.2f}x)"),
            "good" if saved is not None and saved > 0 else "",
        ),
        ("unknown" if cost is None else f"${cost:.4f}", "cost", ""),
    ]
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><div class="big {cls}">{_e(big)}</div>'
            f'<div class="small">{_e(small)}</div></div>'
            for big, small, cls in tiles
        )
        + "</div>"
    )


def _table(headers: Sequence[str], rows: Iterable[str], *, numeric: Sequence[bool] = ()) -> str:
    head = "".join(
        f'<th class="num">{_e(h)}</th>' if i < len(numeric) and numeric[i] else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(cells: Sequence[object], *, numeric: Sequence[bool] = (), cls: str = "") -> str:
    """A table row of escaped cells (a cell that is already markup is passed as ``_Html``)."""
    tds = []
    for i, cell in enumerate(cells):
        text = cell.markup if isinstance(cell, _Html) else _e(cell)
        num = ' class="num"' if i < len(numeric) and numeric[i] else ""
        tds.append(f"<td{num}>{text}</td>")
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>{''.join(tds)}</tr>"


class _Html:
    """Markup made here (never from data), passed through a cell unescaped."""

    def __init__(self, markup: str) -> None:
        self.markup = markup


def _failures(d: Mapping[str, Any], cap: int) -> str:
    failures = d.get("failures", [])
    failed = d.get("items", {}).get("failed", 0)
    if not failed:
        return "<h2>Failures</h2><p>None.</p>"
    rows = [
        _row([f.get("id"), f.get("stage"), f.get("type"), _clip(f.get("message", ""))])
        for f in failures[:cap]
    ]
    more = failed - min(len(failures), cap)
    tail = f'<p class="note">{more} more in results.jsonl.</p>' if more > 0 else ""
    return "<h2>Failures</h2>" + _table(["item", "stage", "type", "message"], rows) + tail


def _clip(text: object, limit: int = MESSAGE_CHARS) -> str:
    value = str(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _timeline(png_path: str | Path | None) -> str:
    if png_path is None or not Path(png_path).is_file():
        return ""
    data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
    return (
        "<h2>Timeline</h2>"
        '<p class="note">Top: one row per item, each attempt a bar coloured by stage; grey before a '
        "bar is time waiting for the rate limiter or a 429 cooldown, dark after a failed attempt "
        "(outlined, x) is the backoff before its retry. Middle: chains in flight. Bottom: calls "
        "completed per minute.</p>"
        f'<img class="timeline" alt="timeline of the run" src="data:image/png;base64,{data}">'
    )


def _time_split(d: Mapping[str, Any]) -> str:
    split = time_split(d)
    total = sum(seconds for _, seconds in split)
    rows = []
    for label, seconds in split:
        share = 100 * seconds / total if total > 0 else 0.0
        bar = _Html(f'<div class="bar"><span style="width:{share:.1f}%"></span></div>')
        rows.append(_row([label, f"{seconds:.2f}", f"{share:.1f}%", bar], numeric=[False, True, True]))
    return (
        "<h2>Where the time went</h2>"
        + _table(["", "seconds", "share", ""], rows, numeric=[False, True, True])
        + f'<p class="note">{_e(TIME_SPLIT_NOTE)} '
        f"Wall time: {_e(fmt_seconds(d.get('wall_seconds', 0.0)))}.</p>"
    )


def _stages(d: Mapping[str, Any], order: Sequence[str] | None) -> str:
    stages = d.get("stages", {})
    names = list(order or []) + [s for s in stages if s not in (order or [])]
    numeric = [False, True, True, True, True, True]
    rows = []
    for name in names:
        s = stages.get(name, {})
        rows.append(
            _row(
                [
                    name,
                    s.get("calls", 0),
                    s.get("failed", 0),
                    f"{s.get('p50_seconds', 0):.3f}",
                    f"{s.get('p95_seconds', 0):.3f}",
                    f"{s.get('max_seconds', 0):.3f}",
                ],
                numeric=numeric,
            )
        )
    headers = ["stage", "calls", "failed attempts", "p50 s", "p95 s", "max s"]
    return "<h2>Stages: latency of each call</h2>" + _table(headers, rows, numeric=numeric)


def _rates(d: Mapping[str, Any]) -> str:
    rates = d.get("rates", {})
    calls = d.get("calls", {})
    lines = [
        f"{calls.get('total', 0):,} calls: {calls.get('succeeded', 0):,} succeeded, "
        f"{calls.get('retried', 0):,} retried, {calls.get('rate_limited', 0):,} rate-limited (429), "
        f"{calls.get('failed', 0):,} failed attempts."
    ]
    if rates.get("achieved_rpm") is not None:
        lines.append(
            f"Achieved over the wall time: {rates['achieved_rpm']:,.0f} requests/min and "
            f"{rates.get('achieved_tpm') or 0:,.0f} tokens/min; {rates.get('rate_limited_pct', 0)}% of "
            "calls were rate-limited."
        )
    body = "".join(f"<p>{_e(line)}</p>" for line in lines)
    models = rates.get("models", {})
    if models:
        numeric = [False, True, True, False, True]
        rows = [
            _row(
                [
                    spec,
                    _limit(m.get("rpm_limit")),
                    _limit(m.get("tpm_limit")),
                    "learned from headers" if m.get("learned") else "configured",
                    m.get("cooldowns", 0),
                ],
                numeric=numeric,
            )
            for spec, m in models.items()
        ]
        headers = ["model", "requests/min limit", "tokens/min limit", "limits", "429 cooldowns"]
        body += _table(headers, rows, numeric=numeric)
    else:
        body += '<p class="note">No rate limits were set or learned (unmetered models).</p>'
    return "<h2>Rates against the limits</h2>" + body


def _limit(value: float | None) -> str:
    return "none" if value is None else f"{value:,.0f}"


ITEM_HEADERS = ["id", "topic", "status", "score", "words", "readability", "topic covered", "calls", "seconds"]
ITEM_NUMERIC = [False, False, False, True, True, True, False, True, True]


def _items(d: Mapping[str, Any], items: Iterable[ItemRecord] | None, *, input_field: str, cap: int) -> str:
    counts = d.get("items", {})
    total = counts.get("total", 0)
    quality = d.get("quality", {})
    summary = ""
    if quality.get("items"):
        summary = (
            f"<p>Mean score {_e(quality['mean_score'])} / 100, mean {_e(quality['mean_words'])} words, "
            f"mean readability {_e(quality['mean_readability'])} (Flesch), topic covered in "
            f"{_e(quality['topic_covered_pct'])}% of outputs.</p>"
        )
    if items is not None:
        rows = [_item_row(r, input_field) for r in _first(items, cap)]
    else:
        rows = [_quality_row(q) for q in quality.get("per_item", [])[:cap]]
        total = quality.get("items", len(rows))
    more = total - len(rows)
    tail = f'<p class="note">{more:,} more in results.jsonl.</p>' if more > 0 else ""
    return "<h2>Each item</h2>" + summary + _table(ITEM_HEADERS, rows, numeric=ITEM_NUMERIC) + tail


def _first(items: Iterable[ItemRecord], cap: int) -> list[ItemRecord]:
    """The first ``cap`` records; a generator (a store cursor) is closed, not read to its end."""
    it = iter(items)
    try:
        return list(islice(it, cap))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _item_row(record: ItemRecord, input_field: str) -> str:
    q = record.quality or {}
    topic = topic_of(record.input, input_field) or ""
    if record.error:
        err = record.error
        topic_cell: object = _Html(
            f"{_e(_clip(topic, 120))}<br><span class='bad'>at {_e(err.get('stage'))}: "
            f"{_e(err.get('type'))}: {_e(_clip(err.get('message', ''), 160))}</span>"
        )
    else:
        topic_cell = _clip(topic, 120)
    cells = [
        record.id,
        topic_cell,
        record.status,
        q.get("score", ""),
        q.get("words", ""),
        q.get("readability", ""),
        _covered(q),
        record.attempts,
        f"{record.seconds:.2f}",
    ]
    return _row(cells, numeric=ITEM_NUMERIC, cls="failed" if record.status == "failed" else "")


def _quality_row(q: Mapping[str, Any]) -> str:
    cells = [
        q.get("id"),
        "",
        "succeeded",
        q.get("score", ""),
        q.get("words", ""),
        q.get("readability", ""),
        _covered(q),
        "",
        "",
    ]
    return _row(cells, numeric=ITEM_NUMERIC)


def _covered(q: Mapping[str, Any]) -> str:
    if "topic_covered" not in q:
        return ""
    share = q.get("topic_coverage")
    return ("yes" if q["topic_covered"] else "no") + (f" ({share:.0%})" if share is not None else "")
