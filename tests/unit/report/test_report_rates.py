"""Rates that mean what they say (issue 11, item 3): achieved requests/min count the calls that
succeeded, with attempts and 429s beside them; a server that holds less than it was told is
named; ``calls.failed`` counts only attempts that failed for good. On the virtual clock."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from chainfleet import (
    Completion,
    CompletionRequest,
    Pipeline,
    Provider,
    RateLimited,
    Stage,
    VirtualClock,
    arun,
)
from chainfleet.errors import ServerError
from chainfleet.store.runstore import RunStore


class Strict(Provider):
    """A server that lets ``held`` requests a minute through (one every 60/held seconds) and
    answers the rest 429 with no rate-limit headers: it never says what it holds."""

    def __init__(self, clock: VirtualClock, held: float, latency: float = 0.1) -> None:
        self.clock = clock
        self.gap = 60.0 / held
        self.latency = latency
        self.next_free = 0.0
        self.refused = 0
        self.answered = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        now = self.clock.now()
        if now < self.next_free:
            self.refused += 1
            raise RateLimited("429 too many requests", retry_after=self.next_free - now)
        self.next_free = now + self.gap
        await self.clock.sleep(self.latency)
        self.answered += 1
        return Completion(text=f"[{request.prompt}]", input_tokens=10, output_tokens=5)


def one_stage(model: str = "openai:gpt-test") -> Pipeline:
    return Pipeline(model=model, input="topic", stages=[Stage(name="w", prompt="W {{ topic }}")])


def go(provider: Provider, clock: VirtualClock, items: int, out: Path, **kw: Any) -> dict[str, Any]:
    async def main() -> None:
        await arun(
            one_stage(),
            [f"t{i}" for i in range(items)],
            clock=clock,
            providers={"openai": provider},
            out=out,
            **kw,
        )

    asyncio.run(clock.run(main()))
    data: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return data


def test_achieved_rates_count_successful_calls_and_attempts_stand_beside(tmp_path: Path) -> None:
    clock = VirtualClock()
    server = Strict(clock, held=90)
    report = go(server, clock, 60, tmp_path / "out", concurrency=8, rpm=120, max_attempts=20)

    assert report["items"]["succeeded"] == 60
    assert server.refused > 0  # told 120/min, the server held 90: some calls were refused
    rates, calls = report["rates"], report["calls"]
    # the rates are over the span a server sees the requests in: the first call sent to the last
    with RunStore.open(tmp_path / "out" / "run.db") as store:
        sent = [call.started for call in store.calls(report["run_id"])]
    assert rates["rates_over"] == "calls sent"
    assert rates["span_seconds"] == pytest.approx(max(sent) - min(sent), abs=1e-3)
    minutes = rates["span_seconds"] / 60
    assert calls["succeeded"] == server.answered == 60
    assert calls["rate_limited"] == server.refused == rates["rate_limited"]
    assert rates["achieved_rpm"] == round(60 / minutes, 1)
    assert rates["attempts_rpm"] == round((60 + server.refused) / minutes, 1)
    assert rates["achieved_rpm"] <= 90 * 1.05  # never more than the server let through
    assert calls["failed"] == 0  # every refused attempt was retried and succeeded
    assert calls["failed_attempts"] == server.refused

    model = rates["models"]["openai:gpt-test"]
    assert model["attempts"]["sent"] == 60 + server.refused
    assert model["achieved"]["rpm"] < model["attempts"]["rpm"]
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    held = model["achieved"]["rpm"]
    assert "told 120/min; the server held less without saying how much: it refused calls" in md
    assert f"calls succeeded at about {held:,.0f}/min" in md
    assert f"{server.refused:,} of them 429s" in md


def test_a_server_that_holds_what_it_was_told_is_not_said_to_hold_less(tmp_path: Path) -> None:
    clock = VirtualClock()
    report = go(Strict(clock, held=600), clock, 30, tmp_path / "out", concurrency=4, rpm=120)

    assert report["calls"]["rate_limited"] == 0
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "the server held" not in md


class Flaky(Provider):
    """Answers 500 to every prompt starting with ``W bad``; the first attempt of the others too."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.seen: set[str] = set()

    async def complete(self, request: CompletionRequest) -> Completion:
        await self.clock.sleep(0.1)
        first = request.prompt not in self.seen
        self.seen.add(request.prompt)
        if request.prompt.startswith("W bad") or first:
            raise ServerError("500 internal error")
        return Completion(text="ok", input_tokens=10, output_tokens=5)


def test_calls_failed_counts_only_attempts_that_failed_for_good(tmp_path: Path) -> None:
    clock = VirtualClock()

    async def main() -> None:
        await arun(
            one_stage(),
            ["a", "b", "bad one"],
            clock=clock,
            providers={"openai": Flaky(clock)},
            out=tmp_path / "out",
            max_attempts=2,
            retry_passes=1,
        )

    asyncio.run(clock.run(main()))
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))

    assert report["items"]["succeeded"] == 2 and report["items"]["failed"] == 1
    # a and b: one refused attempt each, retried; "bad one": 2 attempts a pass, two passes
    assert report["calls"]["total"] == 2 * 2 + 4
    assert report["calls"]["failed_attempts"] == 2 + 4
    assert report["calls"]["failed"] == 1  # the last attempt of the one item that failed
