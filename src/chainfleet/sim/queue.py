"""The sim server's queueing mode: N slots, the other requests wait inside the server.

Local model servers do not refuse a request they cannot start: llama.cpp's ``--parallel N`` and
Ollama's ``OLLAMA_NUM_PARALLEL`` keep N slots busy and hold every further request in a queue until
a slot frees up. Seen from the client, latency then grows with the number in flight while the
throughput stays that of N slots: exactly the server on which summing observed latencies
overstates what running one at a time would take. ``SimServerSettings(slots=N)``
(``chainfleet sim-server --slots N``) makes the sim server behave that way, so estimates and
adaptive concurrency can be tested against it offline.

A request holds a slot for its service time only (``latency`` plus jitter, or ``slow_seconds``);
validation, rate limits and faults answered at once never queue. Waiting is first come, first
served. ``max_in_flight`` still caps queued plus served requests (503 above it), so
``slots=8, max_in_flight=64`` is a server with 8 slots and a queue of 56.

Hand-written rather than an ``asyncio.Semaphore`` because the number of slots can change while
requests wait (``POST /sim/config``), and the stats need the queue's length and waits.

Example::

    queue = SlotQueue(2)
    async with queue.slot():      # waits while 2 others are being served
        await asyncio.sleep(1.0)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["SlotQueue"]


class SlotQueue:
    """``slots`` requests served at once, first come first served; ``None``: no queueing at all."""

    def __init__(self, slots: int | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._slots = slots
        self._clock = clock
        self._busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.reset_stats()

    @property
    def slots(self) -> int | None:
        return self._slots

    def resize(self, slots: int | None) -> None:
        """Change the number of slots; requests waiting start at once if there is room now."""
        self._slots = slots
        self._wake()

    def reset_stats(self) -> None:
        self.served = 0
        self.queued_total = 0
        self.peak_queued = len(getattr(self, "_waiters", ()))
        self.peak_busy = self._busy
        self.wait_seconds = 0.0

    def stats(self) -> dict[str, Any]:
        """What ``/sim/stats`` shows under ``queue``."""
        return {
            "slots": self._slots,
            "busy": self._busy,
            "queued": len(self._waiters),
            "peak_busy": self.peak_busy,
            "peak_queued": self.peak_queued,
            "queued_total": self.queued_total,
            "served": self.served,
            "wait_seconds": round(self.wait_seconds, 6),
        }

    def _take(self) -> None:
        self._busy += 1
        self.peak_busy = max(self.peak_busy, self._busy)

    def _has_room(self) -> bool:
        return self._slots is None or self._busy < self._slots

    def _wake(self) -> None:
        while self._waiters and self._has_room():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()  # the slot passes to the waiter before anyone else can take it
                waiter.set_result(None)

    async def _acquire(self) -> None:
        if self._has_room() and not self._waiters:
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.queued_total += 1
        self.peak_queued = max(self.peak_queued, len(self._waiters))
        started = self._clock()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted, then cancelled before it could use the slot
            else:
                self._waiters.remove(waiter)
            raise
        finally:
            self.wait_seconds += self._clock() - started

    def _release(self) -> None:
        self._busy -= 1
        self._wake()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body (its service time), waiting in line for it first."""
        await self._acquire()
        try:
            yield
        finally:
            self.served += 1
            self._release()
