"""The progress display while a run goes: a live panel on a terminal, plain lines elsewhere.

:class:`Progress` reads the runner's counters on a timer and never per call, so the run pays
nothing for it but one snapshot per tick. It shows items done / failed / in flight out of the
total, each stage's calls in flight and done, the achieved requests and tokens per minute over
the last ``window`` seconds against each model's limits, 429s and retries, tokens and cost so
far, the concurrency (and the adaptive limit under ``-c auto``) and, when the total is known,
an ETA from the recent completion rate.

Modes:

- ``live``: a rich ``Live`` panel on ``stream`` redrawn ``refresh_per_second`` times a second
  (rich is imported only then);
- ``plain``: one log line every ``every`` seconds, for CI logs and pipes;
- ``quiet``: nothing;
- ``auto`` (the default): ``live`` when ``stream`` is a terminal, else ``plain``.

Time is read from the runner's clock, so on a ``VirtualClock`` the display ticks in virtual time.
This module keeps the timer and the counting; :mod:`chainfleet.cli.view` holds the numbers of one
instant (:class:`~chainfleet.cli.view.View`) and the text they become. Once the run is over,
:func:`output_progress` is the one line shown while the output folder is written.

Example::

    progress = Progress()  # stderr; live on a terminal, plain lines otherwise
    try:
        report = await arun(pipeline, "topics.txt", on_start=progress.start)
    finally:
        await progress.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Literal

from chainfleet.cli.view import ModelView, StageView, View, batch_text, live_panel, plain_line

if TYPE_CHECKING:
    from chainfleet.runner.core import Runner

__all__ = ["Progress", "ProgressPrinter", "output_progress"]

Mode = Literal["auto", "live", "plain", "quiet"]


@dataclass(frozen=True)
class _Sample:
    """The counters that rates are computed from, at one instant."""

    at: float
    finished: int
    calls: int
    tokens: int
    #: calls so far per model spec (from the per-stage counts), for each model's request rate
    model_calls: dict[str, int]


@dataclass
class _Window:
    """Samples of the last ``seconds``, plus the newest one before them, to compute rates."""

    seconds: float
    samples: deque[_Sample] = field(default_factory=deque)

    def add(self, sample: _Sample) -> None:
        self.samples.append(sample)
        boundary = sample.at - self.seconds
        while len(self.samples) > 2 and self.samples[1].at <= boundary:
            self.samples.popleft()

    def per_minute(self, value: Callable[[_Sample], int]) -> float | None:
        """The per-minute rate of ``value(sample)`` between the oldest and newest sample."""
        first, last = self.samples[0], self.samples[-1]
        span = last.at - first.at
        if span <= 0:
            return None
        return 60.0 * (value(last) - value(first)) / span


class Progress:
    """Shows a run's progress while it goes; see the module docstring for what and how.

    ``start(runner)`` is called from inside the event loop (pass it as ``arun(on_start=...)``);
    ``await stop()`` ends the display (a live panel is left showing its final state). One
    ``Progress`` shows one run at a time; it may be started again after :meth:`stop`.
    """

    def __init__(
        self,
        mode: Mode = "auto",
        *,
        stream: IO[str] | None = None,
        every: float = 5.0,
        refresh_per_second: float = 4.0,
        window: float = 30.0,
        label: str | None = None,
        console: Any = None,
    ) -> None:
        if every <= 0 or refresh_per_second <= 0 or window <= 0:
            raise ValueError("every, refresh_per_second and window must be positive")
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        if mode == "auto" and console is not None:
            mode = "live"
        self.mode: Mode = _resolve(mode, self.stream)
        self.every = every
        self.refresh_per_second = refresh_per_second
        self.window = window
        self.label = label
        #: a ``rich.console.Console`` to draw on (tests: ``Console(force_terminal=True, file=...)``)
        self.console = console
        self._runner: Runner | None = None
        self._task: asyncio.Task[None] | None = None
        self._live: Any = None
        self._started = 0.0
        self._samples = _Window(window)
        self._stage_models: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, runner: Runner) -> None:
        """Begin showing ``runner``'s progress (from inside the running event loop)."""
        if self.mode == "quiet":
            return
        self._runner = runner
        self._started = runner.clock.now()
        self._samples = _Window(self.window)
        self._stage_models = {
            s.name: runner.pipeline.model_for(s) for s in runner.pipeline.stages if not s.is_tool
        }
        self._samples.add(self._sample())
        if self.mode == "live":
            self._live = self._open_live()
            period = 1.0 / self.refresh_per_second
        else:
            period = self.every
        self._task = asyncio.get_running_loop().create_task(self._loop(period))

    def pause(self) -> None:
        """Stop drawing at once, from plain code (the output phase, which runs no event loop):
        the live panel is left as it is; :meth:`stop` still ends it cleanly."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        live, self._live = self._live, None
        if live is not None:
            with contextlib.suppress(Exception):
                live.stop()

    async def stop(self) -> None:
        """End the display; a live panel is redrawn once more with the final counts."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        live, self._live = self._live, None
        if live is not None:
            with contextlib.suppress(Exception):  # a display must never fail the run's ending
                self._samples.add(self._sample())
                live.update(self._render_live(self.view()))
            live.stop()  # draws the final state once more and leaves it on screen

    async def _loop(self, period: float) -> None:
        assert self._runner is not None
        clock = self._runner.clock
        try:
            while True:
                await clock.sleep(period)
                self._tick()
        except Exception as exc:  # a broken display (a closed pipe ...) must not touch the run
            with contextlib.suppress(Exception):
                self.stream.write(f"progress display stopped: {type(exc).__name__}: {exc}\n")

    def _tick(self) -> None:
        """Take a sample and draw: a frame of the live panel, or one plain line."""
        self._samples.add(self._sample())
        if self._live is not None:
            self._live.update(self._render_live(self.view()), refresh=True)
        else:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    # -- the numbers -------------------------------------------------------------------------------

    def _sample(self) -> _Sample:
        runner = self._runner
        assert runner is not None
        s = runner.stats
        per_model: dict[str, int] = {}
        for name, spec in self._stage_models.items():
            stage = s.stages.get(name)
            if stage is not None:
                per_model[spec] = per_model.get(spec, 0) + stage.calls
        return _Sample(
            at=runner.clock.now(),
            finished=s.done + s.failed_now,
            calls=s.calls,
            tokens=s.input_tokens + s.output_tokens,
            model_calls=per_model,
        )

    def view(self) -> View:
        """The display's numbers now (rates as of the latest sample)."""
        runner = self._runner
        if runner is None:
            raise RuntimeError("Progress.view() before start()")
        s = runner.stats
        window = self._samples
        rpm = window.per_minute(lambda x: x.calls)
        tpm = window.per_minute(lambda x: x.tokens)
        finishing = window.per_minute(lambda x: x.finished)
        total = runner.total
        eta = None
        if total is not None and finishing:
            eta = max(0, total - s.done - s.failed_now) * 60.0 / finishing
        adaptive = runner.adaptive
        return View(
            label=self.label,
            elapsed=runner.clock.now() - self._started,
            total=total,
            admitted=s.admitted,
            done=s.done,
            failed=s.failed_now,
            in_flight=s.in_flight,
            stages=self._stages(runner),
            calls=s.calls,
            retried=s.calls_retried,
            rate_limited=s.rate_limited,
            reused=s.reused + s.cache_hits,
            rpm=rpm,
            tpm=tpm,
            models=self._models(runner, tpm),
            input_tokens=s.input_tokens,
            output_tokens=s.output_tokens,
            cost_usd=runner.cost_usd,
            concurrency=runner.concurrency,
            adaptive_limit=adaptive.limit if adaptive is not None else None,
            adaptive_cap=adaptive.cap if adaptive is not None else None,
            eta=eta,
            window=min(self.window, window.samples[-1].at - window.samples[0].at),
            batch=_batch_text(runner),
        )

    @staticmethod
    def _stages(runner: Runner) -> list[StageView]:
        # ``in_flight``: chains at the stage now (waiting, calling or backing off); done: its
        # successful attempts
        views = []
        names = [stage.name for stage in runner.pipeline.stages]
        if runner.pipeline.work is not None:  # the user's own chain: its calls' labels, as they come
            names = list(runner.stats.stages)
        for name in names:
            st = runner.stats.stages.get(name)
            if st is None:
                views.append(StageView(name, 0, 0, 0))
                continue
            ended = len(st.seconds)
            views.append(StageView(name, st.in_flight, ended - st.failed, st.calls))
        return views

    def _models(self, runner: Runner, tpm: float | None) -> list[ModelView]:
        single = len(set(self._stage_models.values())) == 1
        views = []
        for spec in sorted(set(self._stage_models.values())):
            limiter = runner.limiters.get(spec)
            rpm = self._samples.per_minute(_calls_of(spec))
            views.append(
                ModelView(
                    spec=spec,
                    rpm=rpm,
                    tpm=tpm if single else None,  # tokens are not counted per model
                    limit_rpm=limiter.limit_rpm if limiter is not None else None,
                    limit_tpm=limiter.limit_tpm if limiter is not None else None,
                    metered=limiter is not None,
                )
            )
        return views

    # -- plain lines -------------------------------------------------------------------------------

    def line(self) -> str:
        """One plain log line with the current counts (what ``plain`` mode prints)."""
        return plain_line(self.view())

    # -- the live panel ----------------------------------------------------------------------------

    def _open_live(self) -> Any:
        from rich.console import Console
        from rich.live import Live

        console = self.console
        if console is None:
            console = Console(file=self.stream, force_terminal=True)
        live = Live(
            self._render_live(self.view()),
            console=console,
            auto_refresh=False,  # redrawn by our own timer, in the event loop: no thread
            transient=False,
        )
        live.start()
        return live

    @staticmethod
    def _render_live(view: View) -> Any:
        return live_panel(view)


def _calls_of(spec: str) -> Callable[[_Sample], int]:
    return lambda sample: sample.model_calls.get(spec, 0)


#: the name this class had before the live display, kept for code that imports it
ProgressPrinter = Progress


def _resolve(mode: Mode, stream: IO[str]) -> Mode:
    if mode != "auto":
        return mode
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        tty = False
    return "live" if tty and os.environ.get("TERM") != "dumb" else "plain"


def _batch_text(runner: Runner) -> str | None:
    batcher = getattr(runner, "batch", None)  # (stand-in runners in tests have none)
    return None if batcher is None else batch_text(batcher.counts)


# -- the output phase ------------------------------------------------------------------------------


def output_progress(stream: IO[str] | None = None, *, every: float = 1.0) -> Callable[[int, int], None]:
    """A progress line for the output phase ("writing the output: 12,000 / 1,000,000 items"),
    on stderr: redrawn in place on a terminal, else a line every ``every`` seconds. An output
    written in under ``every`` seconds shows none."""
    out = stream if stream is not None else sys.stderr
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    state: dict[str, float | None] = {"first": None, "last": None}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        first, last = state["first"], state["last"]
        if first is None:
            state["first"] = first = now
        final = done >= total
        if final and last is None:
            return  # nothing shown yet: it was quick
        if not final and now - (first if last is None else last) < every:
            return
        state["last"] = now
        share = f" ({100 * done / total:.0f}%)" if total else ""
        line = f"writing the output: {done:,} / {total:,} items{share}"
        with contextlib.suppress(OSError, ValueError):  # a closed terminal: the writing goes on
            out.write(("\r" + line + ("\n" if final else "")) if tty else line + "\n")
            out.flush()

    return show
