"""The progress display as a user sees it: plain lines in a log, a live panel on a terminal."""

from __future__ import annotations

import asyncio
import io
import re
from types import SimpleNamespace
from typing import Any

import pytest

from chainfleet import VirtualClock, arun
from chainfleet.cli.progress import Progress
from chainfleet.limits.adaptive import AdaptiveConcurrency
from chainfleet.limits.limiter import ModelLimiter
from chainfleet.runner.demo import demo_pipeline
from chainfleet.store.stats import RunStats

LINE = re.compile(
    r"^\[\s*(?P<t>\d+\.\d)s\] (?P<done>\d+)/30 items done, (?P<failed>\d+) failed, "
    r"(?P<flight>\d+) in flight \| (?P<calls>\d+) calls, \d+ retried, \d+ rate-limited \| "
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

TOPICS = [f"topic number {i}" for i in range(30)]


def real_run(progress: Progress) -> Any:
    """30 items at -c 5 on sim at 0.05 s a call (about 0.3 s), with ``progress`` showing."""

    async def main() -> Any:
        try:
            return await arun(demo_pipeline(latency=0.05), TOPICS, concurrency=5, on_start=progress.start)
        finally:
            await progress.stop()

    return asyncio.run(main())


# -- plain lines (not a terminal) ---------------------------------------------------------------


def test_plain_lines_carry_the_counts_of_a_real_run() -> None:
    stream = io.StringIO()
    progress = Progress(stream=stream, every=0.05)
    assert progress.mode == "plain"  # a StringIO is not a terminal

    report = real_run(progress)

    lines = stream.getvalue().splitlines()
    assert len(lines) >= 3, lines
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    done = [int(m["done"]) for m in parsed if m]
    calls = [int(m["calls"]) for m in parsed if m]
    assert done == sorted(done) and calls == sorted(calls)  # counters only grow
    assert all(int(m["flight"]) <= 5 and int(m["failed"]) == 0 for m in parsed if m)
    assert all(c <= report.calls["total"] for c in calls)  # never above the calls really made
    assert calls[-1] > 0
    assert "req/min" in lines[-1] and "tok/min" in lines[-1] and "ETA" in lines[-1]
    assert "research" in lines[-1] and "edit" in lines[-1]
    assert report.items_succeeded == 30


def fake_runner(clock: VirtualClock, **kw: Any) -> Any:
    """What the display reads of a runner, to set counts by hand."""
    fields = {
        "stats": RunStats(),
        "clock": clock,
        "total": 100,
        "concurrency": 5,
        "adaptive": None,
        "limiters": {"sim": ModelLimiter(rpm=600, tpm=60_000, clock=clock)},
        "cost_usd": None,
        "pipeline": demo_pipeline(),
    }
    return SimpleNamespace(**{**fields, **kw})


def drive(runner: Any, progress: Progress, until: float, stall_after: float | None = None) -> None:
    """Each virtual second (at t + 0.5) finish 2 items of 3 calls and 300 tokens each, up to
    ``stall_after`` seconds; stop the display at ``until`` + 0.5."""
    clock = runner.clock

    async def main() -> None:
        progress.start(runner)
        await clock.sleep(0.5)
        for t in range(int(until)):
            if stall_after is None or t < stall_after:
                runner.stats.done += 2
                runner.stats.calls += 6
                runner.stats.input_tokens += 200
                runner.stats.output_tokens += 400
            await clock.sleep(1.0)
        await progress.stop()

    asyncio.run(clock.run(main()))


def test_plain_line_numbers_rates_against_limits_and_eta() -> None:
    clock = VirtualClock()
    stream = io.StringIO()
    runner = fake_runner(clock)

    drive(runner, Progress("plain", stream=stream, every=5.0), until=10)

    first = stream.getvalue().splitlines()[0]
    # at 5 s: 10 items done (2 a second), 6 calls and 600 tokens a second, 90 items to go
    assert first == (
        "[   5.0s] 10/100 items done, 0 failed, 0 in flight | 30 calls, 0 retried, 0 rate-limited"
        " | 360/600 req/min, 36,000/60,000 tok/min | tokens 3,000 | cost unknown | concurrency 5"
        " | running/done research 0/0, write 0/0, edit 0/0 | ETA 45s"
    )


def test_rates_cover_the_recent_window_only() -> None:
    clock = VirtualClock()
    stream = io.StringIO()
    runner = fake_runner(clock)

    # 2 items a second for 20 s, then nothing: 35 s later the 30 s window holds no progress
    drive(runner, Progress("plain", stream=stream, every=5.0), until=55, stall_after=20)

    lines = stream.getvalue().splitlines()
    assert "[  55.0s] 40/100 items done" in lines[-1]
    assert "| 0 req/min, 0 tok/min" not in lines[-1]  # the limits are shown beside the rates
    assert "| 0/600 req/min, 0/60,000 tok/min |" in lines[-1]
    assert lines[-1].endswith("| ETA -")  # no recent completions: no honest estimate


def test_unknown_total_cost_and_adaptive_concurrency() -> None:
    clock = VirtualClock()
    stream = io.StringIO()
    adaptive = AdaptiveConcurrency(cap=64, start=4)
    runner = fake_runner(clock, total=None, cost_usd=0.0123, adaptive=adaptive, limiters={"sim": None})
    runner.stats.admitted = 12

    drive(runner, Progress("plain", stream=stream, every=5.0), until=6)

    line = stream.getvalue().splitlines()[0]
    assert "10 items done of 12 read so far" in line
    assert "cost $0.0123" in line
    assert "concurrency auto 4.0 (cap 64)" in line
    assert "360 req/min, 36,000 tok/min" in line  # unmetered: no limit beside the rate
    assert "ETA" not in line  # no total, no estimate


# -- quiet ---------------------------------------------------------------------------------------


def test_quiet_prints_nothing() -> None:
    stream = io.StringIO()

    report = real_run(Progress("quiet", stream=stream, every=0.01))

    assert stream.getvalue() == ""
    assert report.items_succeeded == 30


# -- live (a terminal) ---------------------------------------------------------------------------


def test_live_panel_renders_the_counts() -> None:
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(force_terminal=True, file=buffer, width=100)
    progress = Progress("live", console=console, refresh_per_second=20, label="parallel, concurrency 5")

    report = real_run(progress)

    text = ANSI.sub("", buffer.getvalue())
    final = text.rsplit("parallel, concurrency 5", 1)[1]  # the last frame: the final state
    assert "30/30 items done, 0 failed, 0 in flight" in final
    assert "ETA 0s" in final
    assert re.search(r"research\s+0\s+30\s+30", final)
    assert re.search(r"edit\s+0\s+30\s+30", final)
    assert report.calls["total"] > 90  # research, write, edit and the write gate's judge
    assert f"{report.calls['total']}, 0 retried, 0 rate-limited (429)" in final
    assert "req/min" in final and "tok/min" in final and "$0.0000" in final
    assert "concurrency 5" in final
    assert text.count("items done") >= 3  # redrawn while the run went, not only at the end


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "mode"), [(io.StringIO(), "plain"), (FakeTerminal(), "live")])
def test_auto_mode_follows_the_stream(
    stream: io.StringIO, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    assert Progress(stream=stream).mode == mode


def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    assert Progress(stream=FakeTerminal()).mode == "plain"


def test_the_stages_in_flight_add_up_to_the_chains_in_flight() -> None:
    # the panel said "5 in flight" while its stages said 2: a chain being judged (or kept, or
    # revised) was at no stage
    from chainfleet import Completion, CompletionRequest, Pipeline, Provider

    class HeldJudge(Provider):
        def __init__(self) -> None:
            self.judging = 0
            self.release = asyncio.Event()
            self.all_judged = asyncio.Event()

        async def complete(self, request: CompletionRequest) -> Completion:
            if request.schema is None:
                return Completion(text="a draft " * 20, input_tokens=1, output_tokens=20)
            self.judging += 1
            if self.judging == 3:
                self.all_judged.set()
            await self.release.wait()
            return Completion(text='{"score": 9, "feedback": "fine"}', input_tokens=1, output_tokens=5)

    pipeline = Pipeline.from_dict(
        {
            "model": "sim",
            "input": "topic",
            "stages": [{"name": "write", "prompt": "{{ topic }}", "gate": [{"judge": {"rubric": "good"}}]}],
        }
    )
    provider = HeldJudge()
    progress = Progress(stream=io.StringIO(), every=60)

    async def main() -> tuple[Any, Any]:
        items = ["a", "b", "c"]
        task = asyncio.ensure_future(
            arun(pipeline, items, concurrency=3, providers={"sim": provider}, on_start=progress.start)
        )
        await provider.all_judged.wait()
        view = progress.view()
        provider.release.set()
        report = await task
        await progress.stop()
        return view, report

    view, report = asyncio.run(main())

    assert report.items_succeeded == 3
    assert view.in_flight == 3
    assert sum(stage.running for stage in view.stages) == 3, view.stages
