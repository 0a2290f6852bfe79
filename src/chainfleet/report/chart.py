"""The run's timeline as a PNG: what every chain did, and when.

Three panels share one time axis (seconds since the run started):

- one row per item (an evenly spread sample when there are more than ``max_rows``), each attempt
  a bar from its start to its end coloured by stage; waits drawn before the bar (the rate
  limiter, a 429's cooldown) and after a failed attempt (the backoff before the retry); failed
  attempts outlined in vermillion with an x; an agent's tool calls as their own narrower indigo
  bars between its model turns (a tool error outlined in vermillion), each after the wait for
  its tool's own limits;
- the chains in flight over time, split into calling, waiting and backing off (the mean over
  small time bins, so no call is too short to count);
- the calls completed per minute, failed attempts stacked on top.

It is drawn by hand with Pillow (:mod:`chainfleet.report.canvas`), not matplotlib: every run
with an output folder draws it, and matplotlib's import and drawing cost about a second of CPU
a run, more than the rest of a small run together. The per-call panels are sums over time bins
taken in one pass over flat arrays of every call's times (about 40 bytes a call, nothing
sorted), so a million calls draw in bounded memory; only the sampled rows are kept as objects.

Example::

    with RunStore.open("out/run.db") as store:
        timeline_png(store.calls(run_id), "out/timeline.png", title="content",
                     stages_order=["research", "write", "edit"])
"""

from __future__ import annotations

import math
import re
import statistics
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chainfleet.report.canvas import Canvas, LegendEntry, Panel, ticks
from chainfleet.store.runstore import CallRow

if TYPE_CHECKING:
    from chainfleet.report.agents import ToolBar

__all__ = ["PALETTE", "SampledCalls", "timeline_png"]

#: Okabe & Ito's colour-blind-safe palette (vermillion is kept for failures)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
FAILED = "#D55E00"
LIMITER = "#BBBBBB"
COOLDOWN = "#777777"
BACKOFF = "#444444"
#: tool calls: Paul Tol's indigo, outside the stages' palette so a tool never looks like a stage
TOOL = "#332288"
SUCCEEDED = "#56B4E9"
SIZE = (1400, 900)  # pixels
LABEL_CHARS = 18
#: time bins of the chains-in-flight panel
BINS = 400

#: text sizes in pixels
TITLE, SUBTITLE, AXIS_LABEL, TICK_LABEL, LEGEND, PANEL_LEGEND = 19.0, 15.0, 14.0, 12.5, 12.5, 11.5

Span = tuple[list[float], list[float], list[float]]  # rows, starts, ends of bars on the rows panel


@dataclass
class SampledCalls:
    """Every call's times in flat arrays, plus the full rows of the sampled items only.

    Items are sampled by index with a stride that doubles whenever more than twice ``max_rows``
    are kept, so memory stays bounded and the sample is spread evenly whatever the order.
    """

    max_rows: int
    queued: array[float] = field(default_factory=lambda: array("d"))
    started: array[float] = field(default_factory=lambda: array("d"))
    ended: array[float] = field(default_factory=lambda: array("d"))
    backoff: array[float] = field(default_factory=lambda: array("d"))
    failed: array[int] = field(default_factory=lambda: array("b"))
    #: one bit per item index seen: the count of items without a set of a million ints
    seen: bytearray = field(default_factory=bytearray)
    stride: int = 1
    rows: dict[int, list[CallRow]] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)

    def add(self, call: CallRow) -> None:
        wait = call.limiter_wait + call.cooldown_wait
        self.queued.append(call.started - wait)
        self.started.append(call.started)
        self.ended.append(call.ended)
        self.backoff.append(call.backoff)
        self.failed.append(call.status != "ok")
        byte = call.index >> 3
        if byte >= len(self.seen):
            self.seen.extend(bytes(byte + 1 + len(self.seen) // 2 - len(self.seen)))
        self.seen[byte] |= 1 << (call.index & 7)
        if call.stage not in self.stages:
            self.stages.append(call.stage)
        if call.index % self.stride:
            return
        self.rows.setdefault(call.index, []).append(call)
        if len(self.rows) > 2 * self.max_rows:
            self.stride *= 2
            self.rows = {i: r for i, r in self.rows.items() if i % self.stride == 0}

    @property
    def items(self) -> int:
        """How many distinct items made the calls."""
        return int.from_bytes(self.seen, "little").bit_count()

    def sample(self) -> list[list[CallRow]]:
        """At most ``max_rows`` items' calls, in input order, evenly spread."""
        indexes = sorted(self.rows)
        if len(indexes) > self.max_rows:
            step = (len(indexes) - 1) / max(self.max_rows - 1, 1)
            indexes = [indexes[round(i * step)] for i in range(self.max_rows)]
        return [self.rows[i] for i in indexes]


def timeline_png(
    calls: Iterable[CallRow],
    path: str | Path,
    *,
    title: str,
    stages_order: Sequence[str],
    max_rows: int = 60,
    concurrency: int | None = None,
    tools: Iterable[ToolBar] = (),
) -> Path:
    """Draw the run's timeline into ``path`` (a PNG, 1400 x 900 px) and return the path.

    ``stages_order`` fixes each stage's colour (stages not in it come after, in order seen);
    ``concurrency``, when given, is drawn as the cap over the chains-in-flight panel; ``tools``
    are the agents' tool calls (:func:`chainfleet.report.agents.tool_bars`), read after the
    calls, and only the sampled items' are kept. A run without calls gets a small image saying
    so.
    """
    collected = SampledCalls(max_rows=max(1, max_rows))
    for call in calls:
        collected.add(call)
    order = list(stages_order) + [s for s in collected.stages if s not in stages_order]
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(order)}
    out = Path(path)
    if not collected.started:
        canvas = Canvas(700, 200)
        canvas.text(350, 80, _plain(title), size=TITLE, anchor="mm")
        canvas.text(350, 130, "no calls were made in this run", size=SUBTITLE, fill="#555555", anchor="mm")
    else:
        canvas = _chart(collected, tools, title=title, colours=colours, concurrency=concurrency)
    canvas.save(out)
    return out


@dataclass
class _Tools:
    """The tool calls: all their times (for the in-flight panel), the sampled items' bars."""

    started: array[float] = field(default_factory=lambda: array("d"))
    ended: array[float] = field(default_factory=lambda: array("d"))
    rows: dict[int, list[ToolBar]] = field(default_factory=dict)

    @classmethod
    def read(cls, tools: Iterable[ToolBar], shown: set[int]) -> _Tools:
        read = cls()
        for bar in tools:
            read.started.append(bar.started)
            read.ended.append(bar.ended)
            if bar.index in shown:
                read.rows.setdefault(bar.index, []).append(bar)
        return read


def _chart(
    calls: SampledCalls,
    tools: Iterable[ToolBar],
    *,
    title: str,
    colours: dict[str, str],
    concurrency: int | None,
) -> Canvas:
    rows = calls.sample()
    items = calls.items
    tool = _Tools.read(tools, {row[0].index for row in rows})
    after = array("d", map(float.__add__, calls.ended, calls.backoff))
    span = max(max(after), max(tool.ended, default=0.0), 1e-3)  # the last call, backoff or tool
    failures = sum(calls.failed)

    canvas = Canvas(*SIZE)
    width = SIZE[0]
    shown = f"; {len(rows)} of {items:,} items shown, evenly spread" if len(rows) < items else ""
    canvas.text(width / 2, 12, _plain(title), size=TITLE, anchor="ma")
    canvas.text(
        width / 2,
        38,
        f"{_count(items, 'item')}, {_count(len(calls.started), 'call')} "
        f"({_count(failures, 'failed attempt')})"
        + (f", {_count(len(tool.started), 'tool call')}" if tool.started else "")
        + shown,
        size=SUBTITLE,
        anchor="ma",
        fill="#444444",
    )

    layers = _in_flight_layers(calls, after, tool, span=span)
    peak = max((sum(values) for values in zip(*(v for v, _, _ in layers), strict=True)), default=0.0)
    flight_top = max(peak * 1.5, (concurrency or 0) * 1.5, 1.0)  # headroom for the legend
    completed = _completed(calls, span=span)
    labels = [_label(row[0].item_id) for row in rows]
    y_ticks = {"flight": ticks(0, flight_top, 5), "done": ticks(0, completed.top, 5)}
    tick_texts = [f"{v:,.0f}" for v in y_ticks["flight"] + y_ticks["done"]]
    widest = max(canvas.text_width(text, TICK_LABEL) for text in [*labels, *tick_texts])
    left, right = min(48 + widest, 0.3 * width), width - 16
    x_range = (0.0, span * 1.01)
    x_ticks = ticks(*x_range, 10)

    legend_bottom = canvas.legend(
        _row_legend(canvas, rows, tool, colours), x=left, y=60, size=LEGEND, max_width=right - left
    )
    top = Panel(canvas, left, legend_bottom + 6, right, 566, x=x_range, y=(max(len(rows), 12) - 0.5, -0.5))
    flight = Panel(canvas, left, 582, right, 696, x=x_range, y=(0.0, flight_top))
    done = Panel(canvas, left, 712, right, 826, x=x_range, y=(0.0, completed.top))

    _draw_rows(top, rows, labels, colours=colours, span=span, tools=tool.rows, x_ticks=x_ticks)
    _draw_in_flight(flight, layers, concurrency=concurrency, x_ticks=x_ticks, y_ticks=y_ticks["flight"])
    _draw_completed(done, completed, x_ticks=x_ticks, y_ticks=y_ticks["done"])
    canvas.text((left + right) / 2, 868, "seconds since the run started", size=AXIS_LABEL, anchor="mm")
    for panel, name in ((top, "item"), (flight, "chains in flight"), (done, "calls done / min")):
        canvas.vtext(16, (panel.top + panel.bottom) / 2, name, size=AXIS_LABEL)
    return canvas


def _entry(
    label: str, canvas: Canvas, *, fill: str | None = None, outline: str | None = None, width: float = 1.0
) -> LegendEntry:
    """A legend entry whose swatch is a rectangle drawn as its bars are."""

    def draw(x0: float, y0: float, x1: float, y1: float) -> None:
        canvas.rect(x0, y0, x1, y1, fill=fill, outline=outline, width=width)

    return (_plain(label), draw)


def _cooldown_entry(canvas: Canvas) -> LegendEntry:
    def draw(x0: float, y0: float, x1: float, y1: float) -> None:
        canvas.rect(x0, y0, x1, y1, fill=COOLDOWN)
        canvas.hatch(x0, y0, x1, y1, fill="white")

    return ("waiting out a 429 cooldown", draw)


def _row_legend(
    canvas: Canvas, rows: list[list[CallRow]], tool: _Tools, colours: dict[str, str]
) -> list[LegendEntry]:
    """The stages drawn, then each kind of wait, failure and tool bar the rows show."""
    calls = [c for row in rows for c in row]
    bars = [t for row in rows for t in tool.rows.get(row[0].index, ())]
    drawn = {c.stage for c in calls}
    entries = [_entry(stage, canvas, fill=colour) for stage, colour in colours.items() if stage in drawn]
    if any(c.limiter_wait > 0 for c in calls) or any(t.waited > 0 for t in bars):
        entries.append(_entry("waiting for the rate limiter", canvas, fill=LIMITER))
    if any(c.cooldown_wait > 0 for c in calls):
        entries.append(_cooldown_entry(canvas))
    if any(c.backoff > 0 for c in calls):
        entries.append(_entry("backoff before a retry", canvas, fill=BACKOFF))
    if any(c.status != "ok" for c in calls):
        entries.append(_entry("failed attempt (x)", canvas, outline=FAILED, width=1.6))
    if bars:
        entries.append(_entry("tool call", canvas, fill=TOOL))
    if any(t.is_error for t in bars):
        entries.append(_entry("tool error", canvas, fill=TOOL, outline=FAILED, width=1.2))
    return entries


def _draw_rows(
    panel: Panel,
    rows: list[list[CallRow]],
    labels: list[str],
    *,
    colours: dict[str, str],
    span: float,
    tools: dict[int, list[ToolBar]],
    x_ticks: list[float],
) -> None:
    """One row per item: wait, attempt and backoff bars; failures outlined and crossed; tool
    calls as narrower bars of their own colour, their errors outlined."""
    canvas = panel.canvas
    panel.grid(x=x_ticks)
    tiny = span / 700  # a zero-length call still shows as a sliver
    row_px = panel.py(1) - panel.py(0)
    marker = 10.0 if len(rows) <= 30 else 6.0
    fails: list[tuple[float, float, int]] = []
    for y, calls in enumerate(rows):
        for c in calls:
            if c.limiter_wait > 0:
                start = c.started - c.cooldown_wait - c.limiter_wait
                panel.bar(start, start + c.limiter_wait, y - 0.14, y + 0.14, fill=LIMITER)
            if c.cooldown_wait > 0:
                _cooldown(panel, c.started - c.cooldown_wait, c.started, y)
            if c.backoff > 0:
                panel.bar(c.ended, c.ended + c.backoff, y - 0.14, y + 0.14, fill=BACKOFF)
            end = c.started + max(c.ended - c.started, tiny)
            panel.bar(c.started, end, y - 0.36, y + 0.36, fill=colours[c.stage])
            if c.status != "ok":
                fails.append((c.started, end, y))
        for t in tools.get(calls[0].index, ()):
            if t.waited > tiny:  # a wait for the tool's own concurrency or rpm
                panel.bar(t.started - t.waited, t.started, y - 0.14, y + 0.14, fill=LIMITER)
            end = t.started + max(t.ended - t.started, tiny)
            outline = FAILED if t.is_error else None
            panel.bar(t.started, end, y - 0.21, y + 0.21, fill=TOOL, outline=outline, width=1.2)
    for start, end, y in fails:  # on top of every bar, so none hides a failure
        panel.bar(start, end, y - 0.36, y + 0.36, outline=FAILED, width=1.6)
        canvas.cross((panel.px(start) + panel.px(end)) / 2, panel.py(y), marker, fill=FAILED, width=1.8)
    # a label every row when they fit, else every second, fourth...: never one over another
    every = 1 << max(0, math.ceil(math.log2(TICK_LABEL * 1.15 / row_px))) if row_px < TICK_LABEL * 1.15 else 1
    shown = [label if i % every == 0 else "" for i, label in enumerate(labels)]
    panel.frame(x=x_ticks, y=[float(i) for i in range(len(rows))], y_labels=shown, size=TICK_LABEL)


def _cooldown(panel: Panel, start: float, end: float, y: float) -> None:
    panel.bar(start, end, y - 0.14, y + 0.14, fill=COOLDOWN)
    a, b = panel.px(start), max(panel.px(end), panel.px(start) + 1)
    panel.canvas.hatch(a, panel.py(y - 0.14), b, panel.py(y + 0.14), fill="white", spacing=3.0)


def _occupancy(intervals: Iterable[tuple[float, float]], *, span: float, bins: int = BINS) -> list[float]:
    """The mean number of intervals open in each of ``bins`` equal bins over ``[0, span]``: the
    exact area under the count, per bin, in one pass and ``O(bins)`` memory.

    ``F(t) = sum(clip(t - s, 0, e - s))``, the time integral of the count up to ``t``, is
    ``t * n(t) - S(t)`` with ``n`` and ``S`` the count and sum of the starts before ``t`` less
    those of the ends; at the bins' edges these are running sums of per-bin counts and sums.
    """
    width = span / bins
    counts = [0] * (bins + 1)
    sums = [0.0] * (bins + 1)
    for start, end in intervals:
        if end <= start:
            continue
        i = int(start / width) + 1 if start > 0 else 0  # the first edge after the point
        if i <= bins:
            counts[i] += 1
            sums[i] += start
        j = int(end / width) + 1 if end > 0 else 0
        if j <= bins:
            counts[j] -= 1
            sums[j] -= end
    means = []
    n, total, previous = 0, 0.0, 0.0
    for k in range(bins + 1):
        n += counts[k]
        total += sums[k]
        area = k * width * n - total
        if k:
            means.append((area - previous) / width)
        previous = area
    return means


def _in_flight_layers(
    calls: SampledCalls, after: array[float], tool: _Tools, *, span: float
) -> list[tuple[list[float], str, str]]:
    """The stacked layers of the chains-in-flight panel (values per bin, colour, label); a kind
    of wait that never happened is left out, so the legend has no empty entry."""
    layers = [
        (_occupancy(zip(calls.started, calls.ended, strict=True), span=span), "#0072B2", "calling a model"),
        (_occupancy(zip(tool.started, tool.ended, strict=True), span=span), TOOL, "tool calls running"),
        (
            _occupancy(zip(calls.queued, calls.started, strict=True), span=span),
            LIMITER,
            "waiting (limiter, cooldown)",
        ),
        (_occupancy(zip(calls.ended, after, strict=True), span=span), BACKOFF, "backing off"),
    ]
    return [layer for i, layer in enumerate(layers) if i == 0 or max(layer[0]) >= 0.01]


def _draw_in_flight(
    panel: Panel,
    layers: list[tuple[list[float], str, str]],
    *,
    concurrency: int | None,
    x_ticks: list[float],
    y_ticks: list[float],
) -> None:
    canvas = panel.canvas
    panel.grid(x=x_ticks, y=y_ticks)
    width = panel.x[1] / 1.01 / BINS
    base = [0.0] * BINS
    for values, colour, _ in layers:
        for k, value in enumerate(values):
            if value > 1e-9:
                panel.bar(k * width, (k + 1) * width, base[k], base[k] + value, fill=colour)
                base[k] += value
    entries = [_entry(label, canvas, fill=colour) for _, colour, label in layers]
    if concurrency:
        at = panel.py(concurrency)
        canvas.line([(panel.left, at), (panel.right, at)], fill="#333333", width=1.0, dash=4.0)

        def cap(x0: float, y0: float, x1: float, y1: float) -> None:
            canvas.line([(x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2)], fill="#333333", width=1.0, dash=3.0)

        entries.append((f"cap ({concurrency})", cap))
    panel.frame(x=x_ticks, y=y_ticks, size=TICK_LABEL)
    canvas.boxed_legend(entries, right=panel.right - 6, top=panel.top + 6, size=PANEL_LEGEND)


def _nice(width: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at least ``width``."""
    exponent = math.floor(math.log10(width))
    for step in (1, 2, 5, 10):
        nice = step * 10.0**exponent
        if nice >= width * 0.999:
            return nice
    return 10.0 ** (exponent + 1)


@dataclass
class _Completed:
    """Calls done per minute in time bins: the bins' edges, successes and failures per bin."""

    edges: list[float]
    width: float
    ok: list[int]
    bad: list[int]

    @property
    def per_minute(self) -> list[float]:
        return [60.0 / (b - a) for a, b in zip(self.edges, self.edges[1:], strict=False)]

    @property
    def top(self) -> float:
        rates = [(o + b) * m for o, b, m in zip(self.ok, self.bad, self.per_minute, strict=True)]
        return max(max(rates, default=0.0) * 1.5, 1.0)  # headroom for the legend


def _completed(calls: SampledCalls, *, span: float) -> _Completed:
    # bins no narrower than a typical call (the median of an evenly spread sample of at most
    # ~10,000 calls) and holding a few calls each, so a steady run reads as a steady rate
    n = len(calls.ended)
    stride = max(1, n // 10_000)
    typical = statistics.median(calls.ended[i] - calls.started[i] for i in range(0, n, stride))
    width = _nice(max(span / 60, typical, 3 * span / n, 1e-3))
    edges: list[float] = []
    while len(edges) * width < span:
        edges.append(len(edges) * width)
    if len(edges) > 1 and span - edges[-1] < width / 2:
        edges.pop()  # a short last bin joins the one before: no spike from a sliver
    edges.append(span)
    last = len(edges) - 2
    ok, bad = [0] * (last + 1), [0] * (last + 1)
    for ended, failed in zip(calls.ended, calls.failed, strict=True):
        k = min(int(ended / width), last) if ended > 0 else 0
        if failed:
            bad[k] += 1
        else:
            ok[k] += 1
    return _Completed(edges, width, ok, bad)


def _draw_completed(
    panel: Panel, completed: _Completed, *, x_ticks: list[float], y_ticks: list[float]
) -> None:
    canvas = panel.canvas
    panel.grid(y=y_ticks)
    edges = completed.edges
    for k, per_min in enumerate(completed.per_minute):
        ok, bad = completed.ok[k] * per_min, completed.bad[k] * per_min
        if ok:
            panel.bar(edges[k], edges[k + 1], 0, ok, fill=SUCCEEDED)
        if bad:
            panel.bar(edges[k], edges[k + 1], ok, ok + bad, fill=FAILED)
    panel.frame(x=x_ticks, y=y_ticks, x_labels=True, size=TICK_LABEL)
    entries = [_entry("succeeded", canvas, fill=SUCCEEDED)]
    if any(completed.bad):
        entries.append(_entry("failed", canvas, fill=FAILED))
    title = f"in bins of {completed.width:g} s"
    canvas.boxed_legend(entries, right=panel.right - 6, top=panel.top + 6, size=PANEL_LEGEND, title=title)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _plain(text: str) -> str:
    """Text drawn on one line: control characters (a newline in an id) become spaces."""
    return _CONTROL.sub(" ", text).strip()


def _label(item_id: str) -> str:
    text = _plain(item_id)
    if len(text) > LABEL_CHARS:
        text = text[: LABEL_CHARS - 1] + "…"
    return text
