"""The one clock every timed thing reads: the runner, the retry policy, the sim model.

Production code uses :class:`SystemClock`. Tests use :class:`VirtualClock`, on which a
``sleep(10)`` takes no real time: whenever every task is waiting on the clock, the clock jumps to
the earliest deadline. So a test can assert that three 1 s calls at concurrency 2 take exactly
2 s of run time without spending them.

Example::

    clock = VirtualClock()
    asyncio.run(clock.run(main(clock)))
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

__all__ = ["Clock", "SystemClock", "VirtualClock"]

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (only differences mean anything)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    """Real time: ``time.perf_counter`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.perf_counter()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class VirtualClock:
    """Simulated time for tests: sleeping costs nothing, order and durations are exact.

    Run the code under test through :meth:`run`; it advances time to the next deadline whenever
    the event loop has nothing else ready to do. Real I/O inside (sockets, threads) is not
    waited for: use it with in-process code only.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._now + seconds, next(self._seq), future))
        await future

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion, advancing virtual time while everything else waits."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(coro)
        while not task.done():
            await self._settle(loop)
            if task.done():
                break
            while self._timers and self._timers[0][2].cancelled():
                heapq.heappop(self._timers)
            if not self._timers:
                await asyncio.sleep(0.001)  # waiting on something real; let it happen
                continue
            deadline = self._timers[0][0]
            self._now = max(self._now, deadline)
            while self._timers and self._timers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._timers)
                if not future.done():
                    future.set_result(None)
        return task.result()

    @staticmethod
    async def _settle(loop: asyncio.AbstractEventLoop) -> None:
        # Yield until no other callback is ready: every task is blocked on the clock (or on
        # real I/O). ``_ready`` is asyncio's run queue; it has been there since Python 3.4.
        for _ in range(10_000):
            await asyncio.sleep(0)
            if not getattr(loop, "_ready", None):
                return
