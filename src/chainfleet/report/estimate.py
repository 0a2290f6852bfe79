"""What running the calls one at a time would have taken, when the server queues.

The report's headline compares the wall time with "one at a time would take". Summing every
call's observed latency answers that only when a call's latency does not depend on how many
others are out at once, as on a cloud API. A local model server (llama.cpp ``--parallel N``,
Ollama ``OLLAMA_NUM_PARALLEL``, the sim server's ``--slots N``) serves N requests at a time and
holds the rest in a queue: the latency the client sees then includes the time spent waiting in
that queue, and the plain sum counts the same server time several times over.

The method (one pass over the run's calls, by start time; 20 bytes a call in memory):

1. For every attempt, count the other calls to the same server (model) in flight when it
   started and when it ended; the larger is its *level* ``j``. In a server with N slots, a call
   made with fewer than N others out is served at once, so its latency is the unloaded service
   time; from N on it waits in line too. (Counting at the end as well: a call sent in a burst
   can reach the server behind calls the client started after it.)
2. Walk the levels upwards from the lowest; a level belongs to the "few in flight" set while its
   median latency stays within :data:`TOLERANCE` of the median of the levels below it. The
   first level clearly slower ends the set (N slots: level N takes about twice as long), if
   the calls of every level from there up are slower too, by more than twice their own spread:
   latencies that merely vary (a cloud API's) never make a step.
3. No level was slower: latency did not grow with the calls in flight, so the plain sum of
   observed latencies is the estimate (method ``sum``). Else each stage's unloaded time is the
   mean latency of its own calls in the set (after dropping any above 1.75 x their median: a
   call that reached the server behind a later one); the estimate is that time times the stage's
   successful calls, plus failed attempts at their observed time (method ``few_in_flight``). A
   stage without calls in the set takes the unloaded time of the model's calls in it (never
   more than its own observed mean).
4. How sure: a 95% interval from the spread of the samples used (``1.96 * sd / sqrt(n)``,
   combined over stages); with a single sample it is unknown and the report says so.

Example::

    est = estimate_sequential(store.calls(run_id), servers={"research": "openai:llama"})
    print(est.seconds, est.describe())  # 12.4 "estimated from 9 calls made with <=7 in flight, ±6%"

Hand-written rather than a regression library: the model is a step (flat, then slower), the
samples are few, and the pass must stay cheap at a million calls (bisect over two
sorted arrays).
"""

from __future__ import annotations

import bisect
import heapq
import math
import statistics
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chainfleet.store.runstore import CallRow

__all__ = [
    "SequentialEstimate",
    "by_items",
    "concurrency_phrase",
    "estimate_sequential",
    "servers_of",
    "speed_phrase",
]

#: a level is "few in flight" while its median latency is within this share of the ones below
TOLERANCE = 0.10
#: in the few-in-flight set, latencies above this multiple of the median are calls that queued
OUTLIER = 1.75
#: latencies kept per (server, stage, level): enough for medians, bounded at any scale
KEEP = 500
#: a step up counts when the slower calls' median is this many of their own spreads away
SPREAD_Z = 2.0
#: latencies per level used to judge that (bounds the work at any concurrency)
SPREAD_SAMPLE = 50


@dataclass
class _Level:
    latencies: list[float] = field(default_factory=list)

    def add(self, latency: float) -> None:
        if len(self.latencies) < KEEP:
            self.latencies.append(latency)


@dataclass
class _Stage:
    ok_count: int = 0
    ok_seconds: float = 0.0
    failed_seconds: float = 0.0
    levels: dict[int, _Level] = field(default_factory=dict)


@dataclass(frozen=True)
class SequentialEstimate:
    """The "one at a time" figure and how it was found.

    - ``seconds``: the estimate; ``observed_seconds``: the plain sum of call latencies;
    - ``method``: ``sum`` (latency did not grow with the calls in flight, or no calls),
      ``few_in_flight`` (the queueing was taken out), ``sum_upper_bound`` (queueing seen but no
      call made with few in flight: the sum, an overstatement);
    - ``samples``, ``max_level``: the calls used and the most others in flight they had;
    - ``error_pct``: the 95% interval's half-width in percent, None when it cannot be told;
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

    @property
    def queue_factor(self) -> float:
        return self.observed_seconds / self.seconds if self.seconds > 0 else 1.0

    def describe(self) -> str:
        """One line for the report: which method gave the figure, and how sure it is."""
        if self.method == "few_in_flight":
            sure = f", ±{self.error_pct:.0f}%" if self.error_pct is not None else ", uncertainty unknown"
            calls = f"{self.samples} call{'' if self.samples == 1 else 's'}"
            return (
                f"estimated from {calls} made with <={self.max_level + 1} in flight{sure}; "
                f"latencies summed would say {self.queue_factor:.1f}x that (time queued in the server)"
            )
        if self.method == "items":
            return "sum of the items' times (their own code, processes and calls, as they ran)"
        if self.method == "items_less_queue":
            return (
                f"sum of the items' times, less {self.observed_seconds - self.seconds:.1f} s their "
                "calls spent queued in the server (estimated as for the calls alone)"
            )
        if self.method == "sum_upper_bound":
            return "sum of call latencies: they grew with the calls in flight, so this overstates it"
        return "sum of call latencies (they did not grow with the calls in flight)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 4),
            "observed_seconds": round(self.observed_seconds, 4),
            "method": self.method,
            "samples": self.samples,
            "max_in_flight": self.max_level + 1,
            "error_pct": None if self.error_pct is None else round(self.error_pct, 1),
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
    return SequentialEstimate(
        seconds=seconds,
        observed_seconds=item_seconds,
        method=method,
        samples=calls.samples,
        max_level=calls.max_level,
        error_pct=calls.error_pct if method == "items_less_queue" else None,
        peak_in_flight=calls.peak_in_flight,
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


def estimate_sequential(
    calls: Iterable[CallRow], *, servers: Mapping[str, str | None] | None = None
) -> SequentialEstimate:
    """Estimate the run's one-at-a-time time from its calls (sorted by start, as the store
    gives them). ``servers`` maps a stage label to its server; None: every call shares one."""
    plain = 0.0  # tool steps: their time as observed (they call no server)
    timelines: dict[str, _Timeline] = {}
    out: list[float] = []  # the ends of the calls in flight, for the peak
    peak = 0
    for call in calls:
        while out and out[0] <= call.started:
            heapq.heappop(out)
        heapq.heappush(out, call.ended)
        peak = max(peak, len(out))
        server = _server(call.stage, servers)
        if server is None:
            plain += max(0.0, call.ended - call.started)
            continue
        timelines.setdefault(server, _Timeline()).add(call)
    observed, total, variance, samples, top, queued = plain, plain, 0.0, 0, 0, False
    for timeline in timelines.values():
        stages = timeline.stages()
        observed += sum(s.ok_seconds + s.failed_seconds for s in stages.values())
        part = _server_estimate(stages)
        total += part.seconds
        variance += part.variance
        samples += part.samples
        top = max(top, part.max_level)
        queued = queued or part.queued
    if not queued:
        return SequentialEstimate(observed, observed, "sum", peak_in_flight=peak)
    if samples == 0:
        return SequentialEstimate(observed, observed, "sum_upper_bound", peak_in_flight=peak)
    error = 100 * 1.96 * math.sqrt(variance) / total if samples > 1 and total > 0 else None
    return SequentialEstimate(
        total, observed, "few_in_flight", samples=samples, max_level=top, error_pct=error, peak_in_flight=peak
    )


class _Timeline:
    """One server's calls as compact arrays (16 bytes a call and a label index), so that each
    call's level can be told from the whole timeline afterwards."""

    def __init__(self) -> None:
        self.starts = array("d")
        self.ends = array("d")
        self.labels = array("i")
        self.ok = bytearray()
        self._names: dict[str, int] = {}

    def add(self, call: CallRow) -> None:
        self.starts.append(call.started)
        self.ends.append(max(call.started, call.ended))
        self.labels.append(self._names.setdefault(call.stage, len(self._names)))
        self.ok.append(call.status == "ok")

    def stages(self) -> dict[str, _Stage]:
        """Each call's level: the others in flight when it started or when it ended, whichever
        is more. A call sent in a burst may reach the server behind later ones; counting those
        still out at its end keeps it out of the "few in flight" set."""
        names = list(self._names)
        found = {name: _Stage() for name in names}
        ends = sorted(self.ends)
        starts = self.starts  # the store gives calls by start time
        for i, (started, ended) in enumerate(zip(starts, self.ends, strict=True)):
            stage = found[names[self.labels[i]]]
            latency = ended - started
            if not self.ok[i]:
                stage.failed_seconds += latency
                continue
            at_start = i - bisect.bisect_right(ends, started)
            at_end = bisect.bisect_left(starts, ended) - bisect.bisect_right(ends, ended)
            stage.ok_count += 1
            stage.ok_seconds += latency
            stage.levels.setdefault(max(at_start, at_end, 0), _Level()).add(latency)
        return found


@dataclass
class _Part:
    seconds: float
    variance: float = 0.0
    samples: int = 0
    max_level: int = 0
    queued: bool = False


def _server_estimate(stages: Mapping[str, _Stage]) -> _Part:
    """One server's share: the plain sum when its latency stayed flat, else the unloaded
    time per stage from the calls made with few in flight."""
    observed = sum(s.ok_seconds + s.failed_seconds for s in stages.values())
    pooled: dict[int, list[float]] = {}
    for stage in stages.values():
        for level, found in stage.levels.items():
            pooled.setdefault(level, []).extend(found.latencies)
    if not pooled:
        return _Part(observed)
    levels = sorted(pooled)
    accepted = list(pooled[levels[0]])
    judged = accepted[:SPREAD_SAMPLE]  # (a bounded sample for the medians, at any scale)
    cut = levels[0]
    for at, level in enumerate(levels[1:], 1):
        floor = statistics.median(judged)
        step = statistics.median(pooled[level]) > (1 + TOLERANCE) * floor
        if step and _slower_above(pooled, levels[at:], floor):
            break
        accepted.extend(pooled[level])
        judged.extend(pooled[level][:SPREAD_SAMPLE])
        cut = level
    else:
        return _Part(observed)  # flat all the way up: nothing queued
    unloaded = statistics.fmean(_robust(accepted))
    part = _Part(0.0, queued=True, max_level=cut)
    for stage in stages.values():
        low = _robust([x for level, found in stage.levels.items() if level <= cut for x in found.latencies])
        part.seconds += stage.failed_seconds
        if not low:  # every call of this stage was made with many in flight
            part.seconds += stage.ok_count * min(unloaded, stage.ok_seconds / max(stage.ok_count, 1))
            continue
        mean = statistics.fmean(low)
        part.seconds += stage.ok_count * mean
        part.samples += len(low)
        if len(low) > 1:
            part.variance += (stage.ok_count * statistics.stdev(low) / math.sqrt(len(low))) ** 2
    return part


def _slower_above(pooled: Mapping[int, list[float]], above: list[int], low: float) -> bool:
    """Whether every call from these levels up is clearly slower than ``low``: at least a
    quarter of the calls, their median above ``low`` by more than the tolerance and by more
    than twice their own spread (median absolute deviation). Latencies that merely vary (a
    cloud API's) do not pass; a queue's step (each wave of N slots adds a service time) does:
    past the slots is where most of a loaded run's calls are."""
    sample = [x for level in above for x in pooled[level][:SPREAD_SAMPLE]]
    judged = sum(min(len(found), SPREAD_SAMPLE) for found in pooled.values())
    if len(sample) < max(8, judged / 4):  # a few slow calls at the top are chance, not a queue
        return False
    middle = statistics.median(sample)
    spread = statistics.median(abs(x - middle) for x in sample)
    return middle > (1 + TOLERANCE) * low and middle - low > SPREAD_Z * spread


def _robust(latencies: list[float]) -> list[float]:
    """The latencies without those that queued behind a later call (above 1.75 x the median)."""
    if not latencies:
        return []
    cap = OUTLIER * statistics.median(latencies)
    return [x for x in latencies if x <= cap]


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
