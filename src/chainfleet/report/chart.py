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

The per-call panels are computed with numpy over every call, so a 100,000-call run renders in a
second or two; only the sampled rows are kept as objects. matplotlib is imported here, when a
chart is drawn, and through its object API (no pyplot: no global state, no GUI backend).

Example::

    with RunStore.open("out/run.db") as store:
        timeline_png(store.calls(run_id), "out/timeline.png", title="content",
                     stages_order=["research", "write", "edit"])
"""

from __future__ import annotations

import math
import re
import warnings
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chainfleet.store.runstore import CallRow

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import NDArray

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
SIZE = (14.0, 9.0)  # inches at dpi 100: 1400 x 900 px
DPI = 100
LABEL_CHARS = 18


@dataclass
class SampledCalls:
    """Every call's times in flat arrays, plus the full rows of the sampled items only.

    Items are sampled by index with a stride that doubles whenever more than twice ``max_rows``
    are kept, so memory stays bounded and the sample is spread evenly whatever the order.
    """

    max_rows: int
    index: array[int] = field(default_factory=lambda: array("q"))
    queued: array[float] = field(default_factory=lambda: array("d"))
    started: array[float] = field(default_factory=lambda: array("d"))
    ended: array[float] = field(default_factory=lambda: array("d"))
    backoff: array[float] = field(default_factory=lambda: array("d"))
    failed: array[int] = field(default_factory=lambda: array("b"))
    stride: int = 1
    rows: dict[int, list[CallRow]] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)

    def add(self, call: CallRow) -> None:
        wait = call.limiter_wait + call.cooldown_wait
        self.index.append(call.index)
        self.queued.append(call.started - wait)
        self.started.append(call.started)
        self.ended.append(call.ended)
        self.backoff.append(call.backoff)
        self.failed.append(call.status != "ok")
        if call.stage not in self.stages:
            self.stages.append(call.stage)
        if call.index % self.stride:
            return
        self.rows.setdefault(call.index, []).append(call)
        if len(self.rows) > 2 * self.max_rows:
            self.stride *= 2
            self.rows = {i: r for i, r in self.rows.items() if i % self.stride == 0}

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
    """Draw the run's timeline into ``path`` (a PNG, ~1400 x 900 px) and return the path.

    ``stages_order`` fixes each stage's colour (stages not in it come after, in order seen);
    ``concurrency``, when given, is drawn as the cap over the chains-in-flight panel; ``tools``
    are the agents' tool calls (:func:`chainfleet.report.agents.tool_bars`), read after the
    calls, and only the sampled items' are kept. A run without calls gets a small figure saying
    so.
    """
    from matplotlib.figure import Figure

    collected = SampledCalls(max_rows=max(1, max_rows))
    for call in calls:
        collected.add(call)
    order = list(stages_order) + [s for s in collected.stages if s not in stages_order]
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(order)}
    out = Path(path)
    with warnings.catch_warnings():
        # ids in scripts DejaVu Sans lacks (emoji, CJK) draw as boxes instead of warning per glyph
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from")
        if not collected.index:
            fig = Figure(figsize=(7, 2), dpi=DPI)
            fig.text(0.5, 0.6, _plain(title), ha="center", fontsize=13, weight="bold")
            fig.text(0.5, 0.3, "no calls were made in this run", ha="center", fontsize=11, color="#555")
        else:
            fig = _figure(collected, tools, title=title, colours=colours, concurrency=concurrency)
        fig.savefig(out, format="png", dpi=DPI)
    return out


def _figure(
    calls: SampledCalls,
    tools: Iterable[ToolBar],
    *,
    title: str,
    colours: dict[str, str],
    concurrency: int | None,
) -> Figure:
    import numpy as np
    from matplotlib.figure import Figure

    started = np.frombuffer(calls.started, dtype=np.float64)
    ended = np.frombuffer(calls.ended, dtype=np.float64)
    queued = np.frombuffer(calls.queued, dtype=np.float64)
    after = ended + np.frombuffer(calls.backoff, dtype=np.float64)
    failed = np.frombuffer(calls.failed, dtype=np.int8).astype(bool)
    items = int(np.unique(np.frombuffer(calls.index, dtype=np.int64)).size)
    rows = calls.sample()
    shown_items = {row[0].index for row in rows}
    tool_rows: dict[int, list[ToolBar]] = {}
    tool_count = tool_end = 0.0
    tool_times: tuple[array[float], array[float]] = (array("d"), array("d"))
    for bar in tools:
        tool_count += 1
        tool_end = max(tool_end, bar.ended)
        tool_times[0].append(bar.started)
        tool_times[1].append(bar.ended)
        if bar.index in shown_items:
            tool_rows.setdefault(bar.index, []).append(bar)
    span = float(max(after.max(), tool_end, 1e-3))  # the end of the last call, backoff or tool

    # fixed margins, not constrained layout: the labels are clipped to LABEL_CHARS, so their room
    # is known, and the layout engine cost as much as drawing (0.1-0.25 s of CPU a chart)
    fig = Figure(figsize=SIZE, dpi=DPI)
    grid = fig.add_gridspec(
        3, 1, height_ratios=[5.2, 1.4, 1.4], left=0.105, right=0.985, top=0.895, bottom=0.06, hspace=0.08
    )
    top = fig.add_subplot(grid[0])
    flight = fig.add_subplot(grid[1], sharex=top)
    done = fig.add_subplot(grid[2], sharex=top)

    shown = f"; {len(rows)} of {items:,} items shown, evenly spread" if len(rows) < items else ""
    fig.suptitle(
        f"{_plain(title)}\n{_count(items, 'item')}, {_count(len(started), 'call')} "
        f"({_count(int(failed.sum()), 'failed attempt')})"
        + (f", {_count(int(tool_count), 'tool call')}" if tool_count else "")
        + shown,
        fontsize=13,
    )
    _draw_rows(top, rows, colours=colours, span=span, tools=tool_rows)
    running = (np.frombuffer(tool_times[0], dtype=np.float64), np.frombuffer(tool_times[1], dtype=np.float64))
    _draw_in_flight(flight, queued, started, ended, after, span=span, concurrency=concurrency, tools=running)
    _draw_completed(done, ended, failed, started, span=span)
    done.set_xlabel("seconds since the run started")
    done.set_xlim(0, span * 1.01)
    for ax in (top, flight):
        ax.tick_params(labelbottom=False)
    return fig


def _draw_rows(
    ax: Axes,
    rows: list[list[CallRow]],
    *,
    colours: dict[str, str],
    span: float,
    tools: dict[int, list[ToolBar]],
) -> None:
    """One row per item: wait, attempt and backoff bars; failures outlined and crossed; tool
    calls as narrower bars of their own colour, their errors outlined."""
    from matplotlib.patches import Patch

    tiny = span / 700  # a zero-length call still shows as a sliver
    bars: dict[str, tuple[list[float], list[float], list[float]]] = {}
    fails: tuple[list[float], list[float], list[float]] = ([], [], [])
    waits: dict[str, tuple[list[float], list[float], list[float]]] = {
        k: ([], [], []) for k in (LIMITER, COOLDOWN, BACKOFF)
    }

    def put(into: tuple[list[float], list[float], list[float]], y: float, x: float, w: float) -> None:
        into[0].append(y)
        into[1].append(x)
        into[2].append(w)

    for y, calls in enumerate(rows):
        for c in calls:
            if c.cooldown_wait > 0:
                put(waits[COOLDOWN], y, c.started - c.cooldown_wait, c.cooldown_wait)
            if c.limiter_wait > 0:
                start = c.started - c.cooldown_wait - c.limiter_wait
                put(waits[LIMITER], y, start, c.limiter_wait)
            if c.backoff > 0:
                put(waits[BACKOFF], y, c.ended, c.backoff)
            width = max(c.ended - c.started, tiny)
            put(bars.setdefault(c.stage, ([], [], [])), y, c.started, width)
            if c.status != "ok":
                put(fails, y, c.started, width)
    tool_bars: tuple[list[float], list[float], list[float]] = ([], [], [])
    tool_fails: tuple[list[float], list[float], list[float]] = ([], [], [])
    for y, calls in enumerate(rows):
        for t in tools.get(calls[0].index, ()):
            width = max(t.ended - t.started, tiny)
            put(tool_bars, y, t.started, width)
            if t.is_error:
                put(tool_fails, y, t.started, width)
            if t.waited > tiny:  # a wait for the tool's own concurrency or rpm
                put(waits[LIMITER], y, t.started - t.waited, t.waited)
    for stage, drawn in bars.items():
        _bars(ax, drawn, 0.72, facecolor=colours[stage])
    for colour, drawn in waits.items():
        hatch = "////" if colour == COOLDOWN else None
        _bars(ax, drawn, 0.28, facecolor=colour, hatch=hatch, edgecolor="white")
    _bars(ax, tool_bars, 0.42, facecolor=TOOL)
    _bars(ax, tool_fails, 0.42, facecolor="none", edgecolor=FAILED, linewidth=1.2)
    if fails[0]:
        ys, xs, ws = fails
        _bars(ax, fails, 0.72, facecolor="none", edgecolor=FAILED, linewidth=1.6)
        middles = [x + w / 2 for x, w in zip(xs, ws, strict=True)]
        size = 7.0 if len(rows) <= 30 else 4.5
        ax.plot(middles, ys, linestyle="none", marker="x", color=FAILED, markersize=size, markeredgewidth=1.8)

    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(
        [_label(calls[0].item_id) for calls in rows], fontsize=min(9.0, max(5.0, 330 / max(len(rows), 1)))
    )
    ax.set_ylim(max(len(rows), 12) - 0.5, -0.5)  # first item on top; a few items keep thin bars
    ax.set_ylabel("item")
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    handles = [Patch(color=colours[s], label=_plain(s)) for s in colours if s in bars]
    extras = [
        (waits[LIMITER], Patch(color=LIMITER, label="waiting for the rate limiter")),
        (
            waits[COOLDOWN],
            Patch(facecolor=COOLDOWN, hatch="////", edgecolor="white", label="waiting out a 429 cooldown"),
        ),
        (waits[BACKOFF], Patch(color=BACKOFF, label="backoff before a retry")),
        (fails, Patch(fill=False, edgecolor=FAILED, linewidth=1.6, label="failed attempt (x)")),
        (tool_bars, Patch(color=TOOL, label="tool call")),
        (tool_fails, Patch(facecolor=TOOL, edgecolor=FAILED, linewidth=1.2, label="tool error")),
    ]
    handles += [handle for drawn, handle in extras if drawn[0]]
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncol=min(len(handles), 8),
        frameon=False,
        fontsize=9,
        handlelength=1.6,
    )


def _bars(
    ax: Axes,
    drawn: tuple[list[float], list[float], list[float]],
    height: float,
    *,
    facecolor: str,
    edgecolor: str = "none",
    linewidth: float = 0.0,
    hatch: str | None = None,
) -> None:
    """Horizontal bars (y, left, width) of one look as one collection: what ``barh`` draws, at
    a fraction of its cost (``barh`` makes a patch per bar, and matplotlib adds each to the
    axes one at a time: a third of the chart's CPU)."""
    from matplotlib.collections import PolyCollection

    ys, xs, ws = drawn
    if not ys:
        return
    half = height / 2
    boxes = [
        ((x, y - half), (x, y + half), (x + w, y + half), (x + w, y - half))
        for y, x, w in zip(ys, xs, ws, strict=True)
    ]
    bars = PolyCollection(
        boxes, facecolors=facecolor, edgecolors=edgecolor, linewidths=linewidth, hatch=hatch, closed=True
    )
    ax.add_collection(bars, autolim=False)


def _occupancy(starts: NDArray[np.float64], ends: NDArray[np.float64], edges: Any) -> Any:
    """The mean number of intervals open in each bin: the exact area under the count, per bin.

    ``F(t) = sum(clip(t - s, 0, e - s))`` is the time integral of the count up to ``t``; over
    sorted starts and ends it is two searchsorted and two cumulative sums.
    """
    import numpy as np

    def integral(points: NDArray[np.float64]) -> Any:
        points = np.sort(points)
        sums = np.concatenate([[0.0], np.cumsum(points)])
        n = np.searchsorted(points, edges, side="right")
        return edges * n - sums[n]

    area = integral(starts) - integral(ends)
    return np.diff(area) / np.diff(edges)


def _draw_in_flight(
    ax: Axes,
    queued: NDArray[np.float64],
    started: NDArray[np.float64],
    ended: NDArray[np.float64],
    after: NDArray[np.float64],
    *,
    span: float,
    concurrency: int | None,
    tools: tuple[NDArray[np.float64], NDArray[np.float64]],
) -> None:
    import numpy as np

    edges = np.linspace(0.0, span, 401)
    layers = [
        (_occupancy(started, ended, edges), "#0072B2", "calling a model"),
        (_occupancy(tools[0], tools[1], edges), TOOL, "tool calls running"),
        (_occupancy(queued, started, edges), LIMITER, "waiting (limiter, cooldown)"),
        (_occupancy(ended, after, edges), BACKOFF, "backing off"),
    ]
    base = np.zeros(len(edges) - 1)
    for i, (values, colour, label) in enumerate(layers):
        if i and values.max(initial=0.0) < 0.01:
            continue  # no waits of this kind: no empty legend entry
        top = base + values
        # step="post" holds each bin's value to its right edge: repeat the last value once
        ax.fill_between(
            edges,
            np.append(base, base[-1]),
            np.append(top, top[-1]),
            step="post",
            color=colour,
            label=label,
            linewidth=0,
        )
        base = top
    peak = float(base.max()) if base.size else 0.0
    if concurrency:
        ax.axhline(concurrency, color="#333", linestyle="--", linewidth=1, label=f"cap ({concurrency})")
        peak = max(peak, float(concurrency))
    ax.set_ylim(0, max(peak * 1.5, 1))  # headroom for the legend
    ax.set_ylabel("chains in flight")
    ax.legend(loc="upper right", fontsize=8, frameon=True, framealpha=0.85, ncol=4)
    ax.grid(axis="both", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def _nice(width: float) -> float:
    """The smallest 1, 2 or 5 x 10^k at least ``width``."""
    exponent = math.floor(math.log10(width))
    for step in (1, 2, 5, 10):
        nice = step * 10.0**exponent
        if nice >= width * 0.999:
            return nice
    return 10.0 ** (exponent + 1)


def _draw_completed(
    ax: Axes, ended: NDArray[np.float64], failed: Any, started: NDArray[np.float64], *, span: float
) -> None:
    import numpy as np

    # bins no narrower than a typical call and holding a few calls each, so a steady run reads
    # as a steady rate, not spikes
    typical = float(np.median(ended - started))
    width = _nice(max(span / 60, typical, 3 * span / len(ended), 1e-3))
    edges = np.arange(0.0, span, width)
    if len(edges) > 1 and span - edges[-1] < width / 2:
        edges = edges[:-1]  # a short last bin joins the one before: no spike from a sliver
    edges = np.append(edges, span)
    ok, _ = np.histogram(ended[~failed], bins=edges)
    bad, _ = np.histogram(ended[failed], bins=edges)
    widths = np.diff(edges)
    per_min = 60.0 / widths
    ax.bar(edges[:-1], ok * per_min, width=widths, align="edge", color="#56B4E9", label="succeeded")
    if bad.any():
        ax.bar(
            edges[:-1],
            bad * per_min,
            width=widths,
            bottom=ok * per_min,
            align="edge",
            color=FAILED,
            label="failed",
        )
    ax.set_ylabel("calls done / min")
    ax.set_ylim(0, max(float(((ok + bad) * per_min).max()) * 1.5, 1))  # headroom for the legend
    ax.legend(
        loc="upper right",
        fontsize=8,
        frameon=True,
        framealpha=0.85,
        ncol=2,
        title=f"in bins of {width:g} s",
        title_fontsize=8,
        alignment="right",
    )
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _plain(text: str) -> str:
    """Text matplotlib draws as is: no control characters, no ``$...$`` read as math."""
    return _CONTROL.sub(" ", text).replace("$", r"\$")


def _label(item_id: str) -> str:
    text = _CONTROL.sub(" ", item_id)
    if len(text) > LABEL_CHARS:
        text = text[: LABEL_CHARS - 1] + "…"
    return text.replace("$", r"\$")
