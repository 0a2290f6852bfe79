"""What running the calls one at a time would have taken: an honest figure, or an honest range.

The report's headline compares the wall time with "one at a time would take". Summing every
call's observed latency answers that only when a call's latency does not depend on how many
others are out at once, as on a cloud API. A local model server (llama.cpp, llama-cpp-python's
server, Ollama, the sim server's ``--slots N``) serves N requests at a time and holds the rest in
a queue: the latency the client sees then includes time queued, and the plain sum counts the same
server time several times over (5x at -c 3 on a one-slot llama server).

The method, per server (model), in :mod:`chainfleet.report.queueing`:

1. Fit the server's slots N to the calls (latency against the calls in flight when each was
   sent) and keep every N the calls cannot tell from the best.
2. The estimate is the server's busy time with N slots (``integral of min(in flight, N)``): every
   call counts, not only those made with few in flight. No queueing seen: the plain sum.
3. How sure: the range over the plausible N, widened by how much a fresh run may differ (each
   call's spread over ``sqrt(calls)``) and, on the slow side, by the client's own time between an
   item's calls (a one-at-a-time run spends it too). A range wider than 20% either side, or
   fewer than :data:`SURE_CALLS` calls, makes the figure *uncertain*: the report gives the range
   and says why, and points to ``chainfleet compare`` (which measures one at a time).
4. Rate limits: one at a time is held by them too. With a limit in force (told or learned, as
   the run held it), the estimate is at least ``calls / requests-per-minute`` and
   ``tokens / tokens-per-minute``.

Example::

    est = estimate_sequential(store.calls(run_id), servers={"research": "openai:llama"})
    print(est.seconds, est.describe())  # 7.9 "estimated from 12 calls: the server serves 1 at a time ..."
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chainfleet.report.duration import fmt_duration
from chainfleet.report.queueing import SlotFit, Timeline, fit_slots
from chainfleet.store.runstore import CallRow

__all__ = [
    "SequentialEstimate",
    "by_items",
    "concurrency_phrase",
    "estimate_sequential",
    "range_phrase",
    "servers_of",
    "speed_phrase",
]

#: fewer calls than this never make a confident figure (a handful says little of a spread)
SURE_CALLS = 10
#: a range wider than this share either side of the figure makes it uncertain
SURE_SHARE = 0.20
#: items whose gaps between calls are kept to tell the client's own time (bounded memory)
GAP_ITEMS = 2000
#: what to run when a short run cannot tell
COMPARE_HINT = "`chainfleet compare` measures it"


@dataclass(frozen=True)
class SequentialEstimate:
    """The "one at a time" figure, how it was found, and how sure it is.

    - ``seconds``: the estimate; ``observed_seconds``: the plain sum of call latencies;
    - ``method``: ``sum`` (latency did not grow with the calls in flight, or no calls),
      ``few_in_flight`` (the server's queue was taken out: its slots fitted to the calls);
    - ``low_seconds``, ``high_seconds``: the range a one-at-a-time run may take;
    - ``why``: None when the figure is sure (within 20% either side), else why it is not;
    - ``samples``, ``max_level``: the calls the fit used, and the slots fitted minus one;
    - ``error_pct``: the range's half-width in percent when sure, None when uncertain;
    - ``floor_seconds``: the least the rate limits in force allow one at a time (None: none);
    - ``peak_in_flight``: the most calls out at once (what ``-c auto`` reached, not its cap);
    - ``queue_factor``: observed sum over estimate (1.0: nothing was queued).
    """

    seconds: float
    observed_seconds: float
    method: str
    samples: int = 0
    max_level: int = 0
    error_pct: float | None = None
    #: the most calls that were out at once during the run
    peak_in_flight: int = 0
    low_seconds: float | None = None
    high_seconds: float | None = None
    why: str | None = None
    floor_seconds: float | None = None
    floor_note: str | None = None
    #: the fewest and most slots the calls allow (the server's requests served at once)
    slots: tuple[int, int] | None = None

    @property
    def queue_factor(self) -> float:
        return self.observed_seconds / self.seconds if self.seconds > 0 else 1.0

    @property
    def uncertain(self) -> bool:
        return self.why is not None

    def describe(self) -> str:
        """One line for the report: which method gave the figure, and how sure it is."""
        if self.method == "items":
            return "sum of the items' times (their own code, processes and calls, as they ran)"
        if self.method == "items_less_queue":
            return (
                f"sum of the items' times, less {self.observed_seconds - self.seconds:.1f} s their "
                "calls spent queued in the server (estimated as for the calls alone)"
            )
        if self.why is not None:
            text = (
                f"uncertain: between {fmt_duration(self.low_seconds or 0.0)} and "
                f"{fmt_duration(self.high_seconds or 0.0)}, because {self.why}; {COMPARE_HINT}"
            )
            if self.method == "sum":
                text = "sum of call latencies (they did not grow clearly with the calls in flight); " + text
            if self.method == "few_in_flight":
                text = (
                    f"estimated from {self.samples} calls made with up to {self.peak_in_flight} in flight, "
                    f"the server serving {self.max_level + 1} at a time at best fit; " + text
                )
        elif self.method == "few_in_flight":
            calls = f"{self.samples} call{'' if self.samples == 1 else 's'}"
            text = (
                f"estimated from {calls}: the server serves {self.max_level + 1} at a time "
                f"(latency grew with more in flight), ±{self.error_pct or 0:.0f}%; latencies summed "
                f"would say {self.queue_factor:.1f}x that (time queued in the server)"
            )
        else:
            sure = f", ±{self.error_pct:.0f}%" if self.error_pct is not None else ""
            text = f"sum of call latencies (they did not grow with the calls in flight{sure})"
        if self.floor_note:
            text += f"; {self.floor_note}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 4),
            "observed_seconds": round(self.observed_seconds, 4),
            "method": self.method,
            "samples": self.samples,
            "max_in_flight": self.max_level + 1,
            "error_pct": None if self.error_pct is None else round(self.error_pct, 1),
            "low_seconds": None if self.low_seconds is None else round(self.low_seconds, 4),
            "high_seconds": None if self.high_seconds is None else round(self.high_seconds, 4),
            "uncertain": self.uncertain,
            "why": self.why,
            "slots": list(self.slots) if self.slots else None,
            "floor_seconds": None if self.floor_seconds is None else round(self.floor_seconds, 4),
            "peak_in_flight": self.peak_in_flight,
            "note": self.describe(),
        }


def by_items(item_seconds: float, calls: SequentialEstimate) -> SequentialEstimate:
    """One at a time for the user's own chain (``chainfleet run my_chain.py:fn``, ``exec``):
    the sum of the items' times, since an item's time is more than its calls' (its code, a
    child process starting) and that part does not shrink when items run one at a time. The
    time its calls waited queued in a server with few slots (``calls``: the estimate of the
    calls alone) would not be spent one at a time and is taken out. ``observed_seconds`` is the
    plain sum of the items' times."""
    queued = max(0.0, calls.observed_seconds - calls.seconds)
    if item_seconds <= 0:
        return calls
    seconds = max(0.0, item_seconds - queued)
    method = "items_less_queue" if queued > 0 and calls.method == "few_in_flight" else "items"
    if method == "items":
        seconds = item_seconds
    seconds = max(seconds, calls.floor_seconds or 0.0)  # one at a time is held by the limits too
    return SequentialEstimate(
        seconds=seconds,
        observed_seconds=item_seconds,
        method=method,
        samples=calls.samples,
        max_level=calls.max_level,
        error_pct=calls.error_pct if method == "items_less_queue" else None,
        peak_in_flight=calls.peak_in_flight,
        floor_seconds=calls.floor_seconds,
        floor_note=calls.floor_note,
    )


def servers_of(pipeline: Any) -> dict[str, str | None]:
    """Each stage's server for :func:`estimate_sequential`: its model spec; None for a tool
    step (it calls no server, so it neither queues nor makes others queue)."""
    found: dict[str, str | None] = {}
    for stage in pipeline.stages:
        found[stage.name] = None if getattr(stage, "tool", None) is not None else pipeline.model_for(stage)
    return found


def _server(label: str, servers: Mapping[str, str | None] | None) -> str | None:
    if servers is None:
        return ""
    if label in servers:
        return servers[label]
    return servers.get(label.split(":", 1)[0], "")  # write:judge and the like: the stage's own


@dataclass
class _Server:
    """One server's calls: the timeline, and what the rate-limit floor needs."""

    line: Timeline
    sent: int = 0  # attempts the limiter let out (429s refused at once are not counted)
    tokens: int = 0


def estimate_sequential(
    calls: Iterable[CallRow],
    *,
    servers: Mapping[str, str | None] | None = None,
    limits: Mapping[str, Mapping[str, float | None]] | None = None,
) -> SequentialEstimate:
    """Estimate the run's one-at-a-time time from its calls (sorted by start, as the store
    gives them). ``servers`` maps a stage label to its server; None: every call shares one.
    ``limits`` maps a server to the rates that held it (``{"rpm": .., "tpm": ..}``, per minute):
    one at a time is held by them too."""
    plain = 0.0  # tool steps: their time as observed (they call no server)
    found: dict[str, _Server] = {}
    out: list[float] = []  # the ends of the calls in flight, for the peak
    peak = 0
    gaps = _Gaps()
    for call in calls:
        while out and out[0] <= call.started:
            heapq.heappop(out)
        heapq.heappush(out, call.ended)
        peak = max(peak, len(out))
        gaps.add(call)
        server = _server(call.stage, servers)
        if server is None:
            plain += max(0.0, call.ended - call.started)
            continue
        part = found.get(server)
        if part is None:
            part = found[server] = _Server(Timeline())
        part.line.add(call)
        part.sent += call.status != "rate_limited"
        part.tokens += call.input_tokens + call.output_tokens
    observed = plain + sum(
        math.fsum(e - s for s, e in zip(p.line.starts, p.line.ends, strict=True)) for p in found.values()
    )
    if not found:
        return SequentialEstimate(
            observed, observed, "sum", peak_in_flight=peak, low_seconds=observed, high_seconds=observed
        )
    return _combine(found, plain, observed, peak, gaps.total(), limits or {})


def _combine(
    found: Mapping[str, _Server],
    plain: float,
    observed: float,
    peak: int,
    client: float,
    limits: Mapping[str, Mapping[str, float | None]],
) -> SequentialEstimate:
    """Each server's fit added up into one figure, its range, and why it is uncertain."""
    fits = {name: fit_slots(part.line) for name, part in found.items()}
    queued = any(fit.queued and not _never_queues(name) for name, fit in fits.items())
    point = low = high = plain
    samples, few, sigmas, unsure = 0, 1 << 30, [], False
    for name, fit in fits.items():
        summed = math.fsum(e - s for s, e in zip(found[name].line.starts, found[name].line.ends, strict=True))
        spread = fit.spread if not math.isnan(fit.spread) else 1.0
        samples += fit.samples
        if _never_queues(name):  # the built-in sim: its latency is what it was set to
            point, low, high = (
                point + summed,
                low + summed * max(0.0, 1 - spread),
                high + summed * (1 + spread),
            )
            continue
        own = fit.busy(fit.slots) if fit.queued else summed
        point += own
        low += fit.busy(fit.plausible[0]) * max(0.0, 1 - spread)
        high += max(own, fit.busy(fit.plausible[1])) * (1 + spread)
        few = min(few, fit.slots)
        unsure = unsure or fit.samples < SURE_CALLS
        if not math.isnan(fit.sigma):
            sigmas.append(fit.sigma)
    low = min(low, point)
    wide = point > 0 and (high > (1 + SURE_SHARE) * point or low < point / (1 + SURE_SHARE))
    why = _why(fits, samples, sigmas) if (wide or unsure) and (sigmas or unsure) else None
    high += client  # one at a time also spends the client's own time between calls
    if queued:  # a busy server overlapped that time with its work; one at a time cannot
        point, low = point + client, low + client
    error = (
        None if why or samples < SURE_CALLS or point <= 0 else 100 * max(high - point, point - low) / point
    )
    floor, floor_note = _floor(found, limits)
    if floor is not None and floor > point:
        point, low, high = floor, max(low, floor), max(high, floor)
        floor_note = f"the rate limit binds one at a time too: {floor_note}"
        why = None if why is None or high <= (1 + SURE_SHARE) * point else why
        error = None if why or samples < SURE_CALLS else 100 * max(high - point, point - low) / point
    else:
        floor_note = None  # the limits allowed more than one at a time would use
    if error is not None:
        error = max(error, 1.0)  # never "±0%": a run measures its calls, not a fresh run's
    slots = (
        (min(f.plausible[0] for f in fits.values()), max(f.plausible[1] for f in fits.values()))
        if fits
        else None
    )
    return SequentialEstimate(
        point,
        observed,
        "few_in_flight" if queued else "sum",
        samples=samples,
        max_level=(few - 1) if queued else max(f.peak for f in fits.values()) - 1,
        error_pct=error,
        peak_in_flight=peak,
        low_seconds=low,
        high_seconds=high,
        why=why,
        floor_seconds=floor,
        floor_note=floor_note,
        slots=slots,
    )


def _never_queues(server: str) -> bool:
    """The built-in simulated model (in this process, no slots): its calls never queue."""
    return server == "sim" or server.startswith("sim:")


def _why(fits: Mapping[str, SlotFit], samples: int, sigmas: list[float]) -> str:
    """Why the figure is uncertain, in words."""
    reasons = []
    if samples < SURE_CALLS:
        reasons.append(f"only {samples} call{'' if samples == 1 else 's'} succeeded")
    elif sigmas:
        spread = 100 * max(sigmas)
        reasons.append(f"{samples} calls whose latency varied about {spread:.0f}% from call to call")
    for name, fit in fits.items():
        lo, hi = fit.plausible
        if hi > lo and not _never_queues(name):
            reasons.append(f"they cannot tell whether the server serves {lo} or up to {hi} requests at once")
            break
    return "; ".join(reasons)


def _floor(
    found: Mapping[str, _Server], limits: Mapping[str, Mapping[str, float | None]]
) -> tuple[float | None, str | None]:
    """The least time the rate limits in force allow the same calls one after another."""
    best: float | None = None
    note: str | None = None
    for name, part in found.items():
        rates = limits.get(name) or {}
        for key, amount, unit in (("rpm", part.sent, "calls"), ("tpm", part.tokens, "tokens")):
            rate = rates.get(key)
            if not rate or amount <= 0:
                continue
            seconds = 60.0 * amount / rate
            if best is None or seconds > best:
                best = seconds
                note = (
                    f"{amount:,} {unit} at the {rate:,.0f}/min that held the run take at least "
                    f"{fmt_duration(seconds)}"
                )
    return best, note


class _Gaps:
    """The client's own time between an item's calls (rendering, storing, the next stage's
    set-up): one at a time pays it once a call. The median gap of the first items' calls,
    times the calls; limiter waits are not counted (they are the rate limit's, see _floor)."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}
        self.seen: list[float] = []
        self.calls = 0

    def add(self, call: CallRow) -> None:
        self.calls += 1
        before = self.last.get(call.index)
        if before is not None:
            self.seen.append(max(0.0, call.queued - before))
        if call.index in self.last or len(self.last) < GAP_ITEMS:
            self.last[call.index] = max(before or 0.0, call.ended)

    def total(self) -> float:
        return statistics.median(self.seen) * self.calls if self.seen else 0.0


def range_phrase(estimate: Mapping[str, Any] | None, wall: float) -> str | None:
    """An uncertain figure's range as speed-ups, e.g. "between 0.92x and 3.40x: uncertain";
    None when the figure is sure (or there is none)."""
    if not estimate or not estimate.get("uncertain") or wall <= 0:
        return None
    low, high = estimate.get("low_seconds") or 0.0, estimate.get("high_seconds") or 0.0
    return f"between {low / wall:.2f}x and {high / wall:.2f}x: the one-at-a-time figure is uncertain"


def speed_phrase(speedup: float | None, saved: float | None) -> str | None:
    """The speed-up in words: "3.24x, 69% saved", or "0.40x: slower than one at a time" (never
    a negative percentage); None when there is nothing to compare."""
    if speedup is None or saved is None:
        return None
    if speedup < 1:
        return f"{speedup:.2f}x: slower than one at a time"
    return f"{speedup:.2f}x, {saved:.0f}% saved"


def concurrency_phrase(concurrency: int, mode: str, estimate: Mapping[str, Any] | None) -> str:
    """How many ran at once, for the closing summary: with ``-c auto`` the peak reached (the
    cap is only what it was allowed), e.g. "concurrency auto (peak 8 in flight, cap 64)"."""
    if mode != "auto":
        return f"concurrency {concurrency}"
    peak = (estimate or {}).get("peak_in_flight")
    return (
        f"concurrency auto (peak {peak} in flight, cap {concurrency})"
        if peak
        else f"concurrency auto (cap {concurrency})"
    )
