"""Items read on a thread of their own, for an input that arrives through a pipe.

The runner reads a file's items on the event loop: the next line is always there. A pipe's next
line may be a long time coming (``tail -f log | chainfleet run ...``), and reading it on the loop
would hold every call in flight until it came. :class:`ThreadedFeed` reads the items on a daemon
thread, at most ``ahead`` of what the run has taken, and hands them over to the loop; a line
that cannot be read reaches the run as the same ``InputError`` a file's would. The thread is a
daemon, so a run that stops (Ctrl-C, a closed stdout) never waits on a pipe that stays open.

Example::

    feed = ThreadedFeed(iter(source), asyncio.get_running_loop())
    while (item := await feed.next()) is not None:
        ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from chainfleet.inputs import Item

__all__ = ["ThreadedFeed"]

_END = object()


class ThreadedFeed:
    """``items`` read on a daemon thread; :meth:`next` awaits the next (None at the end)."""

    def __init__(self, items: Iterator[Item], loop: asyncio.AbstractEventLoop, *, ahead: int = 256) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._room = threading.Semaphore(ahead)
        self._loop = loop
        self._thread = threading.Thread(
            target=self._read, args=(items,), name="chainfleet-input", daemon=True
        )
        self._thread.start()

    def _read(self, items: Iterator[Item]) -> None:
        try:
            for item in items:
                self._room.acquire()  # no further ahead of the run than ``ahead`` items
                self._put(item)
        except Exception as exc:  # an InputError (or an OSError reading): the run's to report
            self._put(exc)
            return
        self._put(_END)

    def _put(self, value: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, value)
        except RuntimeError:  # the loop is closed: the run is over
            pass

    async def next(self) -> Item | None:
        """The next item, None once the input has ended; raises what reading it raised."""
        value = await self._queue.get()
        if value is _END or isinstance(value, Exception):
            self._queue.put_nowait(value)  # for every other worker waiting too
            if isinstance(value, Exception):
                raise value
            return None
        self._room.release()
        assert isinstance(value, Item)
        return value
