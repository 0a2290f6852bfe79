"""Never a runaway: however high the concurrency asked for, the runner starts no more workers
than there are items. (Signals, the cap's message and secrets, in real processes:
tests/e2e/test_hardening.py.)"""

from __future__ import annotations

import asyncio

from chainfleet import Pipeline, Stage, arun
from chainfleet.clock import VirtualClock
from chainfleet.providers import Provider
from chainfleet.providers.base import Completion, CompletionRequest


class CountsTasks(Provider):
    """Answers at once, noting the most asyncio tasks alive during any call."""

    kind = "sim"

    def __init__(self) -> None:
        self.most_tasks = 0
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        self.most_tasks = max(self.most_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return Completion(text=f"[{request.prompt}]", input_tokens=1, output_tokens=1)


def two_stages() -> Pipeline:
    return Pipeline(
        input="topic",
        stages=[Stage(name="a", prompt="A {{ topic }}"), Stage(name="b", prompt="B {{ a }}")],
    )


def test_workers_never_outnumber_the_items() -> None:
    provider = CountsTasks()
    clock = VirtualClock()
    report = asyncio.run(
        clock.run(
            arun(two_stages(), ["x", "y", "z"], concurrency=10_000, clock=clock, providers={"sim": provider})
        )
    )
    assert report.items_succeeded == 3 and provider.calls == 6
    assert provider.most_tasks <= 8  # the main task, at most 4 workers and the clock's own
