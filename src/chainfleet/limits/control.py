"""Finding the capacity of a server that queues: a latency-gradient estimate of its queue.

A server that refuses when busy (a provider's 503, vLLM's queue limit) says so; one that queues
(llama.cpp's ``--parallel N``, Ollama's ``OLLAMA_NUM_PARALLEL``) never does: past its N slots,
latency grows and throughput does not. Refusal-driven AIMD then climbs far past N (the issue
measured 3x the slots: the same throughput at 2.4x the latency).

:class:`QueueEstimate` reads the queue from latency, as TCP Vegas reads it from round-trip
times: with ``n`` calls in flight, an unloaded latency ``base`` and the round's median latency
``rtt``, about ``n * (1 - base / rtt)`` calls are waiting rather than being served. ``base`` is
the lowest round median of the recent rounds, not the fastest single call: a server's own
jitter (0.3-0.5 s a call) is not a queue. Each round (as many calls as were in flight) gives a verdict: grow
while fewer than ``alpha`` wait, shrink when more than ``beta`` do, else hold. The adaptive
controller applies it alongside its own backing off on refusals. At ``alpha=0.5, beta=1.5`` a
server with 8 slots is kept at 8.5-9.5 in flight: all slots busy, latency 1.06-1.19x unloaded.

Hand-written: the concurrency-limit libraries (Netflix's concurrency-limits, its Python ports)
are for servers limiting their callers; this is a client limiting itself, on an injected clock.

Example::

    estimate = QueueEstimate()
    verdict = estimate.sample(latency=0.61, in_flight=9)   # None until a round is complete
"""

from __future__ import annotations

import statistics
from collections import deque
from typing import Literal

__all__ = ["QueueEstimate", "Verdict"]

Verdict = Literal["grow", "hold", "shrink"]


class QueueEstimate:
    """How many calls wait inside the server, from the latencies of the last round."""

    def __init__(self, *, alpha: float = 0.5, beta: float = 1.5, history: int = 30) -> None:
        self.alpha = alpha
        self.beta = beta
        #: the median latencies of the last ``history`` rounds; the lowest is the server unloaded
        self._recent: deque[float] = deque(maxlen=history)
        self._round: list[float] = []
        self._in_flight: list[int] = []
        #: the last round's estimate (calls waiting) and verdict
        self.queue: float | None = None
        self.verdict: Verdict = "grow"
        self.rounds = 0

    @property
    def base(self) -> float | None:
        return min(self._recent) if self._recent else None

    def sample(self, latency: float, in_flight: int) -> Verdict | None:
        """One call's latency with ``in_flight`` calls out; a verdict when a round is complete."""
        self._round.append(latency)
        self._in_flight.append(max(1, in_flight))
        if len(self._round) < max(self._in_flight):
            return None
        rtt = statistics.median(self._round)
        flying = statistics.mean(self._in_flight)
        self._recent.append(rtt)
        base = min(self._recent)
        self.queue = flying * (1.0 - base / rtt) if rtt > 0 else 0.0
        self._round.clear()
        self._in_flight.clear()
        self.rounds += 1
        if self.queue < self.alpha:
            self.verdict = "grow"
        elif self.queue > self.beta:
            self.verdict = "shrink"
        else:
            self.verdict = "hold"
        return self.verdict
