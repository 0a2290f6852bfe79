"""How many chains may be in flight, for servers that limit concurrency rather than rate.

A provider states a rate (requests and tokens a minute: :mod:`chainfleet.limits.limiter`); an
Ollama queue, a vLLM server or a provider answering 503 when busy states nothing, and the only
way to find its capacity is to try. :class:`AdaptiveConcurrency` does so as TCP does, by
additive increase and multiplicative decrease (AIMD): each round of successful calls lets one
more chain in, a refusal (429/503/529) or a latency far above the best seen takes a share away.
A server that queues instead of refusing never says it is full, so the latency of each round
also goes through a :class:`~chainfleet.limits.control.QueueEstimate`, whose verdict holds or
shrinks the limit when calls wait inside the server.

The runner uses it with ``--concurrency auto``: each chain holds a slot from its start to its
end, and every call reports how it went.

Example::

    adaptive = AdaptiveConcurrency(cap=64)
    await adaptive.acquire()                # a slot for one chain
    try:
        ...                                 # the chain's calls, each followed by:
        await adaptive.observe(ok=True, overloaded=False, latency=0.8)
    finally:
        await adaptive.release()
"""

from __future__ import annotations

import asyncio

from chainfleet.limits.control import QueueEstimate

__all__ = ["AdaptiveConcurrency"]


class AdaptiveConcurrency:
    """How many chains may be in flight, found by trying: additive increase, multiplicative
    decrease (AIMD), as TCP does.

    For servers that limit concurrency rather than rate (an Ollama queue, vLLM, a provider
    answering 503 when busy). Beside refusals it reads latency: a
    :class:`~chainfleet.limits.control.QueueEstimate` says when calls wait inside a server that queues
    instead of refusing, and then the limit holds (a call or so waiting) or shrinks by one per
    round (more waiting) instead of growing. Workers hold a slot per chain
    (:meth:`acquire`/:meth:`release`); every call reports how it went (:meth:`observe`). A success
    raises the limit by ``1 / limit`` (one step per round of calls), ten times more gently near
    the limit at the last refusal; a 429/503/529, or a latency over ``latency_factor`` times the
    best seen, multiplies it by ``decrease`` (at most once per ``cooldown`` calls, so one burst of
    refusals is one decrease). The limit stays within
    [1, ``cap``].
    """

    def __init__(
        self,
        cap: int,
        *,
        start: int = 4,
        decrease: float = 0.8,
        latency_factor: float = 3.0,
        queue: QueueEstimate | None = None,
    ) -> None:
        self.cap = cap
        self.limit = float(min(cap, start))
        #: the queue inside the server, read from latency (a server that queues, not refuses)
        self.queue = queue or QueueEstimate()
        self.decrease = decrease
        self.latency_factor = latency_factor
        self.in_flight = 0
        self.best_latency: float | None = None
        self.max_seen = self.limit
        self.decreases = 0
        #: the limit at the last refusal: increases slow down near it
        self.ceiling: float | None = None
        self._calls_since_decrease = 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def acquire(self) -> None:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1

    async def release(self) -> None:
        changed = self._condition()
        async with changed:
            self.in_flight -= 1
            changed.notify_all()

    async def observe(self, *, ok: bool, overloaded: bool, latency: float | None) -> None:
        """Adjust the limit after one call."""
        self._calls_since_decrease += 1
        if overloaded:
            self._decrease()
        elif ok and latency is not None:
            if self.best_latency is None or latency < self.best_latency:
                self.best_latency = latency
            self.queue.sample(latency, self.in_flight)
            verdict = self.queue.verdict
            if latency > self.best_latency * self.latency_factor:
                self._decrease()
            elif verdict == "shrink":  # calls wait inside the server: one fewer per round
                self.limit = max(1.0, self.limit - 1.0 / self.limit)
            elif verdict == "hold":
                pass
            elif self.ceiling is not None and self.limit >= self.ceiling - 1:
                # near where the server last refused: probe upwards ten times more gently
                self.limit = min(float(self.cap), self.limit + 0.1 / self.limit)
            else:
                self.limit = min(float(self.cap), self.limit + 1.0 / self.limit)
        self.max_seen = max(self.max_seen, self.limit)
        changed = self._condition()
        async with changed:
            changed.notify_all()

    def _decrease(self) -> None:
        # one decrease per round of calls: the refusals of one burst are one signal
        if self._calls_since_decrease >= max(1, int(self.limit)) or self.decreases == 0:
            self.ceiling = self.limit
            self.limit = max(1.0, self.limit * self.decrease)
            self.decreases += 1
            self._calls_since_decrease = 0
