"""Plain progress lines on stderr every few seconds while a run goes (``--quiet`` for none).

The live rich display comes later; this printer reads the runner's counters on a timer, so it
costs nothing per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import click

from ..runner import Runner


class ProgressPrinter:
    def __init__(self, every: float = 2.0) -> None:
        self.every = every
        self._task: asyncio.Task[None] | None = None
        self._started = time.monotonic()

    def start(self, runner: Runner) -> None:
        self._started = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._loop(runner))

    async def _loop(self, runner: Runner) -> None:
        while True:
            await asyncio.sleep(self.every)
            s = runner.stats
            total = f"/{runner.total}" if runner.total is not None else ""
            click.echo(
                f"[{time.monotonic() - self._started:6.1f}s] {s.done}{total} done, "
                f"{s.failed_now} failed so far, {s.in_flight} in flight, {s.calls} calls",
                err=True,
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
