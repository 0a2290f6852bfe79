"""How many requests a server served at once, fitted from one run's calls, and what its calls
would have taken one at a time.

A server with N slots (llama.cpp ``--parallel N``, llama-cpp-python's server: one; Ollama
``OLLAMA_NUM_PARALLEL``; the sim server's ``--slots N``; a cloud API: as many as you send) serves
N requests at once and holds the rest in a queue. Its slots' busy time is the time its calls
would take one at a time, and the run's own timeline gives it for any N::

    busy(N) = integral over the run of min(calls in flight, N)

``busy(1)`` is the time at least one call was out; ``busy(peak)`` is the plain sum of the
calls' latencies (no queueing). This uses every call, not only the few made with little in
flight (a short run has almost none: 12 calls at -c 3 on a one-slot server left one).

Which N: a call sent with ``j`` others out waits, in an N-slot first-come-first-served queue,
for about ``max(0, j + 1 - N) / N`` service times before its own, so its latency is about
``s * q(j)`` with ``q(j) = 1 + max(0, j + 1 - N) / N``. :func:`fit_slots` fits ``log latency =
log s + log q(j)`` for each N (weighted least squares on a bounded sample of calls: a latency
summing q service times varies q times less) and keeps the best N and every N the calls cannot
tell from it (a likelihood-ratio test, 95%): their ``busy(N)``
values are the range the run allows. A short run, or a server whose latency varies a lot from
call to call (an LLM writing 5 tokens one time and 40 the next), leaves several N plausible,
and the report gives the range rather than a confident figure.

How much a fresh one-at-a-time run may differ: each call's own spread (the fit's residuals,
scaled for calls whose latency summed several services) over ``sqrt(calls)``, times sqrt(2)
(this run's total and the fresh one's both vary), at 95%.

Hand-written rather than a queueing library: the model is one line per N, the samples are
few, and the pass must stay cheap at a million calls (one sweep over sorted starts and ends,
a fit on at most :data:`FIT_SAMPLE` calls).

Example::

    line = Timeline()
    for call in calls:
        line.add(call)
    fit = fit_slots(line)
    print(fit.slots, fit.busy(fit.slots), fit.plausible)   # 1 7.9 (1, 1)
"""

from __future__ import annotations

import bisect
import math
import operator
from array import array
from dataclasses import dataclass

from chainfleet.store.rows import CallRow

__all__ = ["SlotFit", "Timeline", "fit_slots"]

#: calls used for the fit (evenly spaced over the run): enough for the test, cheap at any scale
FIT_SAMPLE = 4000
#: chi-squared with one degree of freedom at 95%: an N whose fit is not worse than this is kept
LR_95 = 3.84
#: calls sent with few enough others out that it takes to tell two slot counts apart
MIN_TELL = 6
#: candidate slot counts tried one by one up to this; above it, in steps of about 12%
DENSE = 32


class Timeline:
    """One server's calls as compact arrays (16 bytes a call and its status), by start time."""

    def __init__(self) -> None:
        self.starts = array("d")
        self.ends = array("d")
        self.ok = bytearray()

    def add(self, call: CallRow) -> None:
        self.starts.append(call.started)
        self.ends.append(max(call.started, call.ended))
        self.ok.append(call.status == "ok")

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True)
class SlotFit:
    """What a server's calls say about its slots.

    - ``slots``: the best-fitting number of requests served at once (``peak``: no queueing seen);
    - ``plausible``: the fewest and most slots the calls cannot tell from the best;
    - ``spread``: a fresh one-at-a-time run's 95% deviation from ``busy(slots)``, as a share;
    - ``samples``: calls the fit used; ``sigma``: one call's spread (log scale, about its CV).
    """

    slots: int
    plausible: tuple[int, int]
    peak: int
    samples: int
    sigma: float
    spread: float
    busy_at: tuple[float, ...]  # busy_at[k]: seconds with exactly k calls out

    def busy(self, slots: int) -> float:
        """Seconds the server's ``slots`` slots were busy: the calls' time one at a time."""
        return _busy(self.busy_at, slots)

    @property
    def queued(self) -> bool:
        return self.slots < self.peak


def fit_slots(line: Timeline) -> SlotFit:
    """Fit the server's slots to the calls of ``line`` (see the module docstring)."""
    line = _by_start(line)
    ends = sorted(line.ends)
    busy_at = _time_at_levels(line.starts, ends)
    peak = max(1, len(busy_at) - 1)
    levels, latencies = _sample(line, ends)
    if len(latencies) < 2 or peak == 1:
        sigma = _sigma(latencies, levels, peak)
        spread = _spread(sigma, len(latencies))
        return SlotFit(peak, (peak, peak), peak, len(latencies), sigma, spread, busy_at)
    logs = [math.log(max(x, 1e-6)) for x in latencies]
    scores = {n: _score(logs, levels, n) for n in _candidates(peak)}
    least = min(scores.values())
    best = min(scores, key=lambda n: (scores[n], -n))  # ties: the most slots (the least queueing)
    fits = [n for n, score in scores.items() if score - least <= LR_95]
    kept = [n for n in scores if n in fits or _few_tell(levels, n, best)]
    if peak in fits:
        best = peak  # a queue the calls cannot tell from none is none (the range keeps the rest)
    else:
        best = min(kept)  # see _few_tell: the fewest slots the calls allow
    sigma = _sigma(latencies, levels, best)
    return SlotFit(best, (min(kept), max(kept)), peak, len(logs), sigma, _spread(sigma, len(logs)), busy_at)


def _by_start(line: Timeline) -> Timeline:
    """The timeline by start time (the store gives calls so; a caller's list may not be)."""
    starts = line.starts
    if all(a <= b for a, b in zip(starts, starts[1:], strict=False)):
        return line
    order = sorted(range(len(starts)), key=starts.__getitem__)
    ordered = Timeline()
    ordered.starts = array("d", (starts[i] for i in order))
    ordered.ends = array("d", (line.ends[i] for i in order))
    ordered.ok = bytearray(line.ok[i] for i in order)
    return ordered


def _busy(busy_at: tuple[float, ...], slots: int) -> float:
    return math.fsum(min(k, slots) * seconds for k, seconds in enumerate(busy_at))


def _time_at_levels(starts: array[float], ends: list[float]) -> tuple[float, ...]:
    """Seconds spent with exactly k calls out, for every k (one sweep over starts and ends)."""
    spent: list[float] = [0.0]
    level, i, j, now = 0, 0, 0, starts[0] if starts else 0.0
    while i < len(starts) or j < len(ends):
        start = i < len(starts) and (j >= len(ends) or starts[i] <= ends[j])
        at = starts[i] if start else ends[j]
        if level >= len(spent):
            spent.extend([0.0] * (level + 1 - len(spent)))
        spent[level] += at - now
        now = at
        if start:
            level, i = level + 1, i + 1
        else:
            level, j = level - 1, j + 1
    while len(spent) > 1 and spent[-1] <= 0:
        spent.pop()
    return tuple(spent)


def _sample(line: Timeline, ends: list[float]) -> tuple[list[int], list[float]]:
    """The calls that succeeded (evenly spaced, at most FIT_SAMPLE): each one's level (the
    others still out when it was sent: those ahead of it in a first-come queue) and latency."""
    ok = [i for i, good in enumerate(line.ok) if good]
    step = max(1, math.ceil(len(ok) / FIT_SAMPLE))
    levels, latencies = [], []
    for i in ok[::step]:
        started = line.starts[i]
        levels.append(max(0, i - bisect.bisect_right(ends, started)))
        latencies.append(line.ends[i] - started)
    return levels, latencies


def _candidates(peak: int) -> list[int]:
    found = list(range(1, min(peak, DENSE) + 1))
    n = float(DENSE)
    while found[-1] < peak:
        n *= 1.12
        found.append(min(peak, round(n)))
    return found


def _few_tell(levels: list[int], slots: int, best: int) -> bool:
    """Whether too few calls tell ``slots`` from ``best``. Past its slots, a queue's latency
    grows in proportion to the calls in flight (N slots of s seconds look like one of s / N):
    only calls sent with fewer than the larger N - 1 others out can tell two N apart, and a
    short run has a handful (a cold first call among them). Then both stay plausible, and the
    figure is the busy time of the fewest slots, the others' in its range."""
    telling = sum(1 for j in levels if j < max(slots, best) - 1)
    return telling < MIN_TELL


def _queue(level: int, slots: int) -> float:
    """Service times a call sent with ``level`` others out spends, its own included."""
    return 1.0 + max(0, level + 1 - slots) / slots


def _score(logs: list[float], levels: list[int], slots: int) -> float:
    """Minus twice the log-likelihood (up to a constant) of the latencies under ``slots``: a
    latency that sums q service times has q times less variance (log scale) than one, so each
    call weighs q; the best-fitting scale is the weighted mean."""
    # a call's weight depends on its level only: each distinct level's weight and log are
    # computed once (the same floats, so the same sums) and looked up, not recomputed per call
    weight_of = {j: _queue(j, slots) for j in set(levels)}
    log_of = {j: math.log(q) for j, q in weight_of.items()}
    weights = list(map(weight_of.__getitem__, levels))
    log_weights = list(map(log_of.__getitem__, levels))
    shifted = list(map(operator.sub, logs, log_weights))
    mean = math.fsum(map(operator.mul, weights, shifted)) / math.fsum(weights)
    sse = math.fsum(w * (x - mean) ** 2 for w, x in zip(weights, shifted, strict=True))
    n = len(logs)
    return n * math.log(max(sse / n, 1e-12)) - math.fsum(log_weights)


def _sigma(latencies: list[float], levels: list[int], slots: int) -> float:
    """One call's spread (log scale) under ``slots``: a latency that summed q services varies
    about sqrt(q) times less than one service, so each residual is scaled back up."""
    if len(latencies) < 2:
        return math.nan
    qs = [_queue(j, slots) for j in levels]
    shifted = [math.log(max(x, 1e-6)) - math.log(q) for x, q in zip(latencies, qs, strict=True)]
    mean = math.fsum(shifted) / len(shifted)
    total = math.fsum((x - mean) ** 2 * q for x, q in zip(shifted, qs, strict=True))
    return math.sqrt(total / (len(shifted) - 1))


def _spread(sigma: float, samples: int) -> float:
    """A fresh run's 95% deviation from this run's total, as a share: both totals draw their
    calls' service times anew, so their difference varies sqrt(2) times one total's spread,
    which is one call's spread over sqrt(calls)."""
    if samples < 2 or math.isnan(sigma):
        return math.nan
    return 1.96 * math.sqrt(2.0) * sigma / math.sqrt(samples)
