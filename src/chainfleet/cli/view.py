"""What the progress display shows, and how it reads.

:class:`View` holds every number of the display at one instant and none of the formatting;
:class:`~chainfleet.cli.progress.Progress` fills one from the runner's counters on each tick.
The functions here turn a view into text: :func:`plain_line` for a log, :func:`live_panel` for
a terminal (rich is imported only inside it), both built from the same small pieces so the two
never disagree. They are pure, so a test can draw any state without running anything.

Example::

    view = progress.view()
    print(plain_line(view))  # [  12.0s] 40/100 items done, 2 failed, 5 in flight | ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chainfleet.report.duration import fmt_duration

if TYPE_CHECKING:
    from chainfleet.chain.batch import BatchCounts

__all__ = [
    "ModelView",
    "StageView",
    "View",
    "batch_text",
    "concurrency_text",
    "eta_text",
    "fmt_cost",
    "fmt_count",
    "items_text",
    "live_panel",
    "plain_line",
    "rate_text",
]


@dataclass(frozen=True)
class StageView:
    name: str
    #: chains at this stage now (waiting for the limiter or the model, judged, revised, kept)
    running: int
    #: calls of this stage that succeeded
    done: int
    #: attempts, retries included
    calls: int


@dataclass(frozen=True)
class ModelView:
    spec: str
    rpm: float | None
    tpm: float | None
    limit_rpm: float | None
    limit_tpm: float | None
    metered: bool


@dataclass(frozen=True)
class View:
    """What the display shows at one instant: every number, none of the formatting."""

    label: str | None
    elapsed: float
    total: int | None
    admitted: int
    done: int
    failed: int
    in_flight: int
    stages: list[StageView]
    calls: int
    retried: int
    rate_limited: int
    reused: int
    rpm: float | None
    tpm: float | None
    models: list[ModelView]
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    concurrency: int
    #: with ``-c auto``: the chains allowed in flight now, and their cap
    adaptive_limit: float | None
    adaptive_cap: int | None
    eta: float | None
    window: float
    #: batch mode: "batches 3 out, 1 done; requests 120 in batches, 40 queued" (None: online)
    batch: str | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def remaining(self) -> int | None:
        return None if self.total is None else max(0, self.total - self.done - self.failed)


def batch_text(counts: BatchCounts) -> str:
    """Batch mode's line: chunks by state, then requests by state."""
    c = counts
    return (
        f"batches {c.in_progress:,} in progress, {c.ended:,} done, {c.failed:,} failed; requests "
        f"{c.in_batches:,} in batches, {c.queued:,} queued, {c.succeeded:,} back, "
        f"{c.errored:,} errored, {c.expired:,} expired"
    )


def fmt_count(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def fmt_cost(cost: float | None) -> str:
    if cost is None:
        return "cost unknown"
    return f"${cost:,.4f}" if cost < 1 else f"${cost:,.2f}"


def items_text(view: View) -> str:
    """``40/100 items done`` (total known) or ``40 items done of 45 read so far``."""
    if view.total is not None:
        return f"{view.done:,}/{view.total:,} items done"
    return f"{view.done:,} items done of {view.admitted:,} read so far"


def eta_text(view: View) -> str | None:
    """``ETA 18s``; None when the total is unknown."""
    if view.total is None:
        return None
    if view.remaining == 0:
        return "ETA 0s" if view.in_flight == 0 else "ETA finishing"
    return "ETA " + (fmt_duration(view.eta, compact=True) if view.eta is not None else "-")


def rate_text(rate: float | None, limit: float | None, unit: str) -> str:
    text = f"{fmt_count(rate)} {unit}"
    return text if limit is None else f"{fmt_count(rate)}/{fmt_count(limit)} {unit}"


def concurrency_text(view: View) -> str:
    if view.adaptive_limit is None:
        return f"concurrency {view.concurrency}"
    return f"concurrency auto {view.adaptive_limit:.1f} (cap {view.adaptive_cap})"


def plain_line(view: View) -> str:
    """``[  12.0s] 40/100 items done, 2 failed, 5 in flight | 120 calls, 3 retried, ...``"""
    head = f"[{view.elapsed:6.1f}s] " + (f"{view.label}: " if view.label else "")
    metered = [m for m in view.models if m.limit_rpm is not None or m.limit_tpm is not None]
    limit_rpm = metered[0].limit_rpm if len(view.models) == 1 and metered else None
    limit_tpm = metered[0].limit_tpm if len(view.models) == 1 and metered else None
    parts = [
        f"{items_text(view)}, {view.failed:,} failed, {view.in_flight:,} in flight",
        f"{view.calls:,} calls, {view.retried:,} retried, {view.rate_limited:,} rate-limited"
        + (f", {view.reused:,} reused" if view.reused else ""),
        f"{rate_text(view.rpm, limit_rpm, 'req/min')}, {rate_text(view.tpm, limit_tpm, 'tok/min')}",
        f"tokens {view.tokens:,}",
        fmt_cost(view.cost_usd) if view.cost_usd is None else f"cost {fmt_cost(view.cost_usd)}",
        concurrency_text(view),
        "running/done " + ", ".join(f"{s.name} {s.running}/{s.done}" for s in view.stages),
    ]
    eta = eta_text(view)
    if eta is not None:
        parts.append(eta)
    if view.batch is not None:
        parts.append(view.batch)
    return head + " | ".join(parts)


def live_panel(view: View) -> Any:
    """The live panel for ``view``: a rich renderable (rich is imported here, not before).

    Plain ``Text`` lines padded by hand, not tables or markup: a frame then takes a fraction of
    a millisecond to draw rather than a few.
    """
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.text import Text

    head = Text()
    head.append(view.label or "chainfleet", style="bold")
    head.append(f"  {view.elapsed:.1f} s  {concurrency_text(view)}")
    items = Text()
    items.append(items_text(view), style="bold")
    items.append(f", {view.failed:,} failed, {view.in_flight:,} in flight")
    eta = eta_text(view)
    if eta is not None:
        items.append(f"  {eta}", style="bold")
    bar_total = view.total if view.total is not None else max(view.admitted, 1)
    bar = ProgressBar(total=bar_total, completed=view.done + view.failed, width=50)

    width = max([5, *(len(st.name) for st in view.stages)])
    table = Text()
    table.append(f"{'stage':<{width}}  {'in flight':>9}  {'done':>9}  {'calls':>9}\n", style="bold")
    for st in view.stages:
        table.append(f"{st.name:<{width}}  {st.running:>9,}  {st.done:>9,}  {st.calls:>9,}\n")

    facts = [
        (f"rate, last {view.window:.0f} s", f"{fmt_count(view.rpm)} req/min, {fmt_count(view.tpm)} tok/min"),
        *((("limits" if i == 0 else ""), _model_text(m)) for i, m in enumerate(view.models)),
        (
            "calls",
            f"{view.calls:,}, {view.retried:,} retried, {view.rate_limited:,} rate-limited (429)"
            + (f", {view.reused:,} reused" if view.reused else ""),
        ),
        (
            "tokens",
            f"{view.tokens:,} (in {view.input_tokens:,}, out {view.output_tokens:,}), "
            + fmt_cost(view.cost_usd),
        ),
        *((("batches", view.batch),) if view.batch is not None else ()),
    ]
    label_width = max(len(label) for label, _ in facts)
    lines = Text()
    for label, value in facts:
        lines.append(f"{label:<{label_width}}  ", style="dim")
        lines.append(value + "\n")
    lines.rstrip()
    return Group(head, items, bar, Text(""), table, lines)  # ("": the bar ends no line itself)


def _model_text(model: ModelView) -> str:
    if not model.metered:
        return f"{model.spec}: {fmt_count(model.rpm)} req/min, no limits"
    text = f"{model.spec}: {rate_text(model.rpm, model.limit_rpm, 'req/min')}"
    if model.tpm is not None or model.limit_tpm is not None:
        text += f", {rate_text(model.tpm, model.limit_tpm, 'tok/min')}"
    if model.limit_rpm is None and model.limit_tpm is None:
        text += " (limits not known yet)"
    return text
