"""The runner: concurrency, lazy depth-first admission, failure isolation, retries, timing.

Time runs on a VirtualClock: a 1 s call takes no real time, and durations are exact.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from chainfleet import (
    AuthFailed,
    Completion,
    CompletionRequest,
    InvalidRequest,
    Overloaded,
    Pipeline,
    Provider,
    RateLimited,
    ServerError,
    Stage,
    VirtualClock,
    arun,
    items_from,
)
from chainfleet.errors import CallError


class Scripted(Provider):
    """A fake model: answers ``<prompt> -> done`` after ``latency`` virtual seconds.

    ``fail`` maps a prompt prefix to a function of the attempt number (1-based) returning the
    error to raise for prompts starting with it, or None to answer.
    """

    def __init__(
        self,
        clock: VirtualClock,
        latency: float = 1.0,
        fail: Mapping[str, Callable[[int], CallError | None]] | None = None,
    ) -> None:
        self.clock = clock
        self.latency = latency
        self.fail = dict(fail or {})
        self.calls: list[str] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls.append(request.prompt)
        self.attempts[request.prompt] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self.clock.sleep(self.latency)
        finally:
            self.in_flight -= 1
        for text, error_for in self.fail.items():
            if request.prompt.startswith(text):
                error = error_for(self.attempts[request.prompt])
                if error is not None:
                    raise error
        return Completion(text=f"[{request.prompt}]", input_tokens=10, output_tokens=5)


def chain(**stage_kw: Any) -> Pipeline:
    return Pipeline(
        input="topic",
        stages=[
            Stage(name="research", prompt="R {{ topic }}", **stage_kw),
            Stage(name="write", prompt="W {{ research }}", **stage_kw),
            Stage(name="edit", prompt="E {{ write }}", **stage_kw),
        ],
    )


def go(clock: VirtualClock, pipeline: Pipeline, items: Any, provider: Provider, **kw: Any) -> Any:
    return asyncio.run(clock.run(arun(pipeline, items, clock=clock, providers={"sim": provider}, **kw)))


def results(report: Any) -> dict[str, Any]:
    return {r.id: r for r in report.results()}


def always(error: Callable[[], CallError]) -> Callable[[int], CallError | None]:
    return lambda attempt: error()


def test_classic_three_topics_at_concurrency_two_take_two_thirds_of_sequential() -> None:
    clock = VirtualClock()
    topics = ["heat pumps", "shipping", "sleep"]
    seq = go(clock, chain(), topics, Scripted(clock), concurrency=1)
    par = go(clock, chain(), topics, Scripted(clock), concurrency=2)
    assert seq.wall_seconds == pytest.approx(9.0)
    assert par.wall_seconds == pytest.approx(6.0)
    assert par.sequential_seconds == pytest.approx(9.0)
    assert par.time_saved_pct == pytest.approx(100 / 3)
    assert par.speedup == pytest.approx(1.5)
    assert par.items_succeeded == 3 and par.exit_code == 0
    assert seq.outputs() == par.outputs()
    assert par.outputs()["1"] == "[E [W [R heat pumps]]]"


@pytest.mark.parametrize(("pieces", "concurrency"), [(10, 5), (10, 25), (50, 10), (7, 3)])
def test_wall_time_is_the_ideal_number_of_waves(pieces: int, concurrency: int) -> None:
    clock = VirtualClock()
    provider = Scripted(clock, latency=10.0)
    report = go(clock, chain(), [f"t{i}" for i in range(pieces)], provider, concurrency=concurrency)
    waves = -(-pieces // concurrency)
    assert report.wall_seconds == pytest.approx(waves * 30.0)
    assert provider.max_in_flight == min(concurrency, pieces)


def test_concurrency_caps_chains_in_flight_and_admission_is_lazy() -> None:
    clock = VirtualClock()
    provider = Scripted(clock)
    pulled: list[int] = []

    def topics() -> Iterator[str]:
        for i in range(1, 41):
            pulled.append(i)
            # never more than `concurrency` items read ahead of the ones finished
            done = sum(1 for p in provider.calls if p.startswith("E "))
            assert i - done <= 4, f"item {i} read while only {done} were done"
            yield f"t{i}"

    report = go(clock, chain(), items_from(topics(), input_field="topic"), provider, concurrency=4)
    assert report.items_succeeded == 40
    assert provider.max_in_flight == 4
    assert pulled == list(range(1, 41))


def test_in_flight_chains_advance_before_new_items_start() -> None:
    """Depth first: item 1's later stages run before items beyond the cap begin."""
    clock = VirtualClock()
    provider = Scripted(clock)
    go(clock, chain(), ["a", "b", "c", "d"], provider, concurrency=2)
    first_c = next(i for i, p in enumerate(provider.calls) if p == "R c")
    assert provider.calls.index("E [W [R a]]") < first_c
    assert provider.calls.index("E [W [R b]]") < first_c


def test_an_item_that_always_fails_leaves_every_other_item_succeeded() -> None:
    clock = VirtualClock()
    provider = Scripted(clock, fail={"R poison": always(lambda: ServerError("boom", status=500))})
    topics = [f"topic {i}" for i in range(1, 26)]
    topics[6] = "poison topic"
    report = go(clock, chain(), topics, provider, concurrency=5, max_attempts=2, retry_passes=1)
    by_id = results(report)
    assert report.items_succeeded == 24 and report.items_failed == 1 and report.exit_code == 1
    assert by_id["7"].status == "failed"
    assert by_id["7"].error == {"stage": "research", "type": "server_error", "message": "boom"}
    assert all(r.status == "succeeded" for i, r in by_id.items() if i != "7")
    assert report.failures == [{"id": "7", "stage": "research", "type": "server_error", "message": "boom"}]
    # 2 attempts in the main pass, 2 more in the retry pass
    assert provider.attempts["R poison topic"] == 4
    assert by_id["7"].attempts == 4


def test_retry_pass_resumes_at_the_failed_stage_and_keeps_earlier_stages() -> None:
    clock = VirtualClock()
    # the write stage of topic "flaky" fails twice (the whole main pass), then succeeds
    flaky = {"W [R flaky]": lambda n: ServerError("busy") if n <= 2 else None}
    provider = Scripted(clock, fail=flaky)
    report = go(clock, chain(), ["ok", "flaky"], provider, concurrency=2, max_attempts=2)
    assert report.items_succeeded == 2 and report.exit_code == 0
    assert provider.attempts["R flaky"] == 1  # research was not called again
    assert provider.attempts["W [R flaky]"] == 3
    assert results(report)["2"].outputs["edit"] == "[E [W [R flaky]]]"


def test_retry_pass_runs_after_the_successful_items_complete() -> None:
    clock = VirtualClock()
    provider = Scripted(clock, fail={"R bad": lambda n: ServerError("x") if n == 1 else None})
    topics = ["bad", "a", "b", "c"]
    go(clock, chain(), topics, provider, concurrency=1, max_attempts=1)
    assert provider.calls[-3:] == ["R bad", "W [R bad]", "E [W [R bad]]"]
    assert provider.calls.index("E [W [R c]]") < len(provider.calls) - 3


def test_no_retry_pass_when_told_none() -> None:
    clock = VirtualClock()
    provider = Scripted(clock, fail={"R bad": always(lambda: ServerError("x"))})
    report = go(clock, chain(), ["bad"], provider, max_attempts=3, retry_passes=0)
    assert provider.attempts["R bad"] == 3 and report.items_failed == 1


def test_transient_errors_back_off_and_honour_the_servers_wait() -> None:
    clock = VirtualClock()
    limited = {"R a": lambda n: RateLimited("429", retry_after=7.0) if n == 1 else None}
    provider = Scripted(clock, fail=limited)
    report = go(clock, chain(), ["a"], provider, max_attempts=3)
    assert report.items_succeeded == 1
    # the refused attempt was retried, so no call failed for good (issue 11: every item succeeded)
    assert report.calls == {
        "total": 4,
        "succeeded": 3,
        "retried": 1,
        "rate_limited": 1,
        "failed": 0,
        "failed_attempts": 1,
    }
    assert report.backoff_seconds == pytest.approx(7.0)
    assert report.wall_seconds == pytest.approx(4 * 1.0 + 7.0)
    assert report.sequential_seconds == pytest.approx(4.0)


def test_permanent_errors_are_not_retried() -> None:
    clock = VirtualClock()
    provider = Scripted(clock, fail={"R long": always(lambda: InvalidRequest("context too long"))})
    report = go(clock, chain(), ["long", "short"], provider, max_attempts=4, retry_passes=2)
    assert provider.attempts["R long"] == 1
    assert results(report)["1"].error["type"] == "invalid_request"
    assert report.items_succeeded == 1


def test_a_fatal_error_stops_admission_and_keeps_completed_items() -> None:
    clock = VirtualClock()
    provider = Scripted(clock, fail={"R t5": always(lambda: AuthFailed("invalid API key", status=401))})
    topics = [f"t{i}" for i in range(1, 101)]
    report = go(clock, chain(), topics, provider, concurrency=2)
    statuses = Counter(r.status for r in report.results())
    assert report.stopped == "invalid API key"
    assert statuses["succeeded"] >= 4
    assert statuses["skipped"] >= 90
    assert sum(statuses.values()) == 100
    assert len(provider.calls) < 30
    assert report.exit_code == 2  # a refused key is a configuration problem


def test_outputs_are_identical_at_every_concurrency_on_sim() -> None:
    pipeline = Pipeline.from_dict(
        {
            "sim": {"latency": 0.5, "jitter": 0.5, "error_rate": 0.2, "seed": 3},
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}: the key facts."},
                {"name": "write", "prompt": "Write an article on {{ topic }} from:\n{{ research }}"},
                {"name": "edit", "prompt": "Edit this draft:\n{{ write }}"},
            ],
        }
    )
    topics = [f"subject number {i}" for i in range(12)]
    outputs = []
    for concurrency in (1, 3, 12):
        clock = VirtualClock()
        report = asyncio.run(
            clock.run(arun(pipeline, topics, concurrency=concurrency, clock=clock, max_attempts=8))
        )
        assert report.items_succeeded == 12
        outputs.append(report.outputs())
    assert outputs[0] == outputs[1] == outputs[2]
    assert all("simulated by chainfleet sim" in text for text in outputs[0].values() if text)


def test_tool_steps_see_the_item_and_earlier_outputs() -> None:
    seen: list[dict[str, Any]] = []

    async def search(context: Mapping[str, Any]) -> str:
        seen.append(dict(context))
        return f"results for {context['topic']}"

    pipeline = Pipeline(
        input="topic",
        stages=[
            Stage(name="search", tool=search),
            Stage(name="research", prompt="R {{ topic }} using {{ search }}"),
        ],
    )
    clock = VirtualClock()
    report = go(clock, pipeline, ["bees"], Scripted(clock))
    assert report.outputs() == {"1": "[R bees using results for bees]"}
    assert seen == [{"id": "1", "topic": "bees"}]


def test_a_tool_that_raises_fails_only_its_item() -> None:
    async def search(context: Mapping[str, Any]) -> str:
        if context["topic"] == "broken":
            raise KeyError("no index")
        return "ok"

    pipeline = Pipeline(
        input="topic",
        stages=[Stage(name="search", tool=search), Stage(name="write", prompt="W {{ search }}")],
    )
    clock = VirtualClock()
    report = go(clock, pipeline, ["fine", "broken", "fine too"], Scripted(clock))
    assert report.items_succeeded == 2
    error = results(report)["2"].error
    assert error["stage"] == "search" and error["type"] == "tool_error"
    assert "KeyError" in error["message"]


def test_a_quality_gate_fails_the_item_with_invalid_output() -> None:
    def at_least_20_chars(text: str) -> str | None:
        return None if len(text) >= 20 else f"only {len(text)} characters"

    pipeline = Pipeline(input="topic", stages=[Stage(name="w", prompt="{{ topic }}", gate=at_least_20_chars)])
    clock = VirtualClock()
    report = go(clock, pipeline, ["x", "a much longer topic here"], Scripted(clock))
    assert report.items_succeeded == 1
    error = results(report)["1"].error
    assert error["type"] == "invalid_output" and "only 3 characters" in error["message"]


def test_per_stage_numbers_and_tokens_are_reported() -> None:
    clock = VirtualClock()
    report = go(clock, chain(), ["a", "b"], Scripted(clock, latency=2.0), concurrency=2)
    data = report.to_dict()
    assert data["stages"]["write"] == {
        "calls": 2,
        "failed": 0,
        "p50_seconds": 2.0,
        "p95_seconds": 2.0,
        "max_seconds": 2.0,
    }
    assert data["tokens"]["input"] == 60 and data["tokens"]["output"] == 30
    assert data["items"] == {"total": 2, "succeeded": 2, "failed": 0, "skipped": 0}
    assert data["cost_usd"] == 0.0  # "sim" is free, whoever answers for it


def test_quality_is_scored_per_item() -> None:
    pipeline = Pipeline.from_dict(
        {
            "sim": {"latency": 0},
            "input": "topic",
            "stages": [{"name": "write", "prompt": "Write an article on {{ topic }}."}],
        }
    )
    report = asyncio.run(arun(pipeline, ["urban beekeeping", "tidal power"]))
    rows = {q["id"]: q for q in report.quality}
    assert set(rows) == {"1", "2"}
    assert rows["1"]["topic_covered"] and rows["1"]["words"] > 100
    assert report.quality_summary()["topic_covered_pct"] == 100.0
    assert all(r.quality is not None for r in report.results())


# -- rate limits through the runner (a provider other than sim gets a limiter) -------------------


class Limited(Scripted):
    """Scripted, answering with OpenAI-style rate-limit headers."""

    def __init__(self, clock: VirtualClock, rpm: int, **kw: Any) -> None:
        super().__init__(clock, **kw)
        self.rpm = rpm
        self.started: list[float] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        self.started.append(self.clock.now())
        done = await super().complete(request)
        headers = {"x-ratelimit-limit-requests": str(self.rpm), "x-ratelimit-remaining-requests": "100"}
        return Completion(text=done.text, input_tokens=10, output_tokens=5, headers=headers)


def openai_chain() -> Pipeline:
    return Pipeline(
        model="openai:gpt-test",
        input="topic",
        stages=[
            Stage(name="research", prompt="R {{ topic }}"),
            Stage(name="write", prompt="W {{ research }}"),
        ],
    )


def test_told_requests_per_minute_spread_the_calls() -> None:
    clock = VirtualClock()
    provider = Limited(clock, rpm=60, latency=0.1)
    report = asyncio.run(
        clock.run(
            arun(
                openai_chain(),
                [f"t{i}" for i in range(15)],
                concurrency=10,
                rpm=60,
                clock=clock,
                providers={"openai": provider},
            )
        )
    )
    assert report.items_succeeded == 15
    # 30 calls at 1 a second after a 1-call burst: the last starts at 29 s, never sooner
    assert provider.started[-1] == pytest.approx(29.0, abs=0.01)
    assert report.waits["limiter_seconds"] > 0
    assert report.rates["models"]["openai:gpt-test"]["rpm_limit"] == 60


def test_untold_limits_are_learned_from_the_headers() -> None:
    clock = VirtualClock()
    provider = Limited(clock, rpm=120, latency=0.1)
    report = asyncio.run(
        clock.run(
            arun(
                openai_chain(),
                [f"t{i}" for i in range(20)],
                concurrency=10,
                clock=clock,
                providers={"openai": provider},
            )
        )
    )
    model = report.rates["models"]["openai:gpt-test"]
    assert model["learned"] is True and model["rpm_limit"] == pytest.approx(120 * 0.98)
    # after the first answers, calls are spread at ~2 a second
    late = provider.started[10:]
    assert (late[-1] - late[0]) / (len(late) - 1) == pytest.approx(60 / (120 * 0.98), rel=0.05)


def test_a_429_closes_the_gate_for_every_chain_of_that_model() -> None:
    clock = VirtualClock()
    limited = {"R t0": lambda n: RateLimited("429", retry_after=5.0) if n == 1 else None}
    provider = Limited(clock, rpm=6000, latency=1.0, fail=limited)
    report = asyncio.run(
        clock.run(
            arun(
                openai_chain(),
                [f"t{i}" for i in range(4)],
                concurrency=4,
                clock=clock,
                providers={"openai": provider},
            )
        )
    )
    assert report.items_succeeded == 4
    # the first round (t=0) got one 429 at t=1; every call after it waited for the gate (t>=6)
    assert sorted(provider.started)[4] >= 6.0
    assert report.waits["cooldown_seconds"] >= 4 * 5.0 - 1e-6
    assert report.waits["backoff_seconds"] == 0  # the gate, not a per-call sleep, held the retry
    assert report.calls["rate_limited"] == 1


def test_concurrency_auto_finds_what_a_busy_server_takes() -> None:
    clock = VirtualClock()

    class Busy(Scripted):
        async def complete(self, request: CompletionRequest) -> Completion:
            if self.in_flight >= 6:
                raise Overloaded("503 busy", status=503)
            return await super().complete(request)

    provider = Busy(clock, latency=1.0)
    report = asyncio.run(
        clock.run(
            arun(
                openai_chain(),
                [f"t{i}" for i in range(120)],
                concurrency="auto",
                max_concurrency=32,
                clock=clock,
                providers={"openai": provider},
                max_attempts=8,
            )
        )
    )
    assert report.items_succeeded == 120
    assert report.concurrency_mode == "auto"
    assert provider.max_in_flight <= 7
    # 240 calls at up to 6 in flight, 1 s each: at least 40 s; AIMD keeps it near that
    assert report.wall_seconds < 40 / 0.75
