"""What a user sees of their own chain while it runs: the progress line names the stages its
calls were labelled with (``fleet.stage``), in the order they came, not the function."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace
from typing import Any

from chainfleet import Pipeline, VirtualClock
from chainfleet.cli.progress import Progress
from chainfleet.store.stats import RunStats


async def article(topic: str, fleet: Any) -> str:
    return topic


def test_the_progress_line_names_the_chains_stage_labels() -> None:
    clock = VirtualClock()
    stats = RunStats()
    for label, calls in (("research", 3), ("write", 2)):
        stage = stats.stage(label)
        stage.calls = calls
        stage.seconds.extend([0.1] * calls)
    stats.calls, stats.done = 5, 2
    runner = SimpleNamespace(
        stats=stats,
        clock=clock,
        total=3,
        concurrency=3,
        adaptive=None,
        limiters={},
        cost_usd=None,
        pipeline=Pipeline.from_function(article),
    )
    stream = io.StringIO()
    progress = Progress("plain", stream=stream, every=1.0)

    async def main() -> None:
        progress.start(runner)  # type: ignore[arg-type]
        await clock.sleep(1.5)
        await progress.stop()

    asyncio.run(clock.run(main()))
    last = stream.getvalue().splitlines()[-1]
    assert "research 0/3" in last and "write 0/2" in last
    assert "article" not in last
