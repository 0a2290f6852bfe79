"""OpenTelemetry traces of a run (``--otel``): the tree, the GenAI attributes, sampling that keeps
failed items, the content flag, reused calls, agents' turns and tools, the metrics.

Each run is real (the runner, the stage code, the limiter, the sim or a scripted provider on a
virtual clock); the spans go to the OpenTelemetry SDK's own in-memory exporter instead of
OTLP/HTTP (the e2e tests send them to a real Phoenix and to a closed port).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from chainfleet import (
    Completion,
    CompletionRequest,
    InvalidRequest,
    Pipeline,
    Provider,
    RateLimited,
    RunSettings,
    VirtualClock,
    arun,
    run,
)
from chainfleet.errors import CallError, ConfigError
from chainfleet.runner.core import Runner
from chainfleet.trace import Tracer, tracer_for, tracing_endpoint
from chainfleet.trace.otel import OtelTracer, TraceOptions
from conftest import FAST_PIPELINE, read_results
from unit.chain import agent_tools

TOOLS = "unit.chain.agent_tools"


class Traced:
    """What a traced run exported: its spans, by name and by parent, and its metrics."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()

    def start(self, *, sample: float = 1.0, content: bool = False) -> Callable[[Runner], None]:
        def on_start(runner: Runner) -> None:
            runner.ctx.tracer = OtelTracer(
                TraceOptions(endpoint="http://127.0.0.1:9", sample=sample, content=content),
                run_id=runner.run_id,
                project=runner.pipeline.name,
                clock=runner.ctx.clock,
                exporter=self.exporter,
                metric_reader=self.reader,
            )

        return on_start

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def roots(self) -> dict[str, ReadableSpan]:
        return {str(s.attributes["chainfleet.item.id"]): s for s in self.spans if s.parent is None}

    def children(self, span: ReadableSpan) -> list[ReadableSpan]:
        found = [s for s in self.spans if s.parent is not None and s.parent.span_id == span.context.span_id]
        return sorted(found, key=lambda s: s.start_time or 0)

    def metric(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:  # nothing was recorded
            return []
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            if m.name == name
            for point in m.data.data_points
        ]


class Scripted(Provider):
    """An OpenAI-kind model (so it is metered and cached) answering after ``latency`` virtual
    seconds; ``fail`` maps a prompt prefix to the error for each attempt number (None: answer)."""

    kind = "openai"

    def __init__(
        self, clock: VirtualClock, fail: dict[str, Callable[[int], CallError | None]] | None = None
    ) -> None:
        self.clock, self.fail = clock, dict(fail or {})
        self.attempts: Counter[str] = Counter()

    async def complete(self, request: CompletionRequest) -> Completion:
        self.attempts[request.prompt] += 1
        await self.clock.sleep(1.0)
        for prefix, error_for in self.fail.items():
            if request.prompt.startswith(prefix) and (error := error_for(self.attempts[request.prompt])):
                raise error
        return Completion(
            text=f"[{request.prompt}]",
            input_tokens=10,
            output_tokens=5,
            model="gpt-x-2026",
            finish_reason="stop",
        )


def two_stages(**top: Any) -> Pipeline:
    return Pipeline.from_dict(
        {
            "name": "scripted",
            "model": "openai:gpt-x",
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "R {{ topic }}", "max_tokens": 300},
                {"name": "write", "prompt": "W {{ research }}", "max_tokens": 500},
            ],
            **top,
        }
    )


def on_clock(clock: VirtualClock, pipeline: Pipeline, items: list[str], provider: Provider, **kw: Any) -> Any:
    return asyncio.run(clock.run(arun(pipeline, items, clock=clock, providers={"openai": provider}, **kw)))


def test_one_trace_per_item_with_a_span_per_stage_and_a_chat_span_per_call() -> None:
    traced = Traced()
    report = run(Pipeline.from_dict(FAST_PIPELINE), ["bees", "tea", "salt"], on_start=traced.start())

    roots = traced.roots()
    assert sorted(roots) == ["1", "2", "3"]
    assert len({root.context.trace_id for root in roots.values()}) == 3
    total_in = total_out = 0
    for item_id, root in roots.items():
        assert root.name == f"item {item_id}"
        assert root.attributes["chainfleet.item.status"] == "succeeded"
        assert root.attributes["session.id"] == report.run_id
        stages = traced.children(root)
        assert [s.name for s in stages] == ["stage research", "stage write", "stage edit"]
        for stage, max_tokens in zip(stages, [800, 1200, 1200], strict=True):
            (chat,) = traced.children(stage)
            attrs = chat.attributes
            assert chat.name == "chat sim"
            assert attrs["gen_ai.operation.name"] == "chat"
            assert attrs["gen_ai.provider.name"] == "sim"
            assert attrs["gen_ai.request.model"] == "sim" and attrs["gen_ai.response.model"] == "sim"
            assert attrs["gen_ai.request.max_tokens"] == max_tokens
            assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
            assert attrs["session.id"] == report.run_id
            assert "gen_ai.input.messages" not in attrs and "output.value" not in attrs  # no --otel-content
            total_in += attrs["gen_ai.usage.input_tokens"]
            total_out += attrs["gen_ai.usage.output_tokens"]
    assert (total_in, total_out) == (report.tokens["input"], report.tokens["output"])


def test_metrics_count_the_runs_tokens_and_calls() -> None:
    traced = Traced()
    report = run(Pipeline.from_dict(FAST_PIPELINE), ["bees", "tea"], on_start=traced.start())

    usage = {p.attributes["gen_ai.token.type"]: p.sum for p in traced.metric("gen_ai.client.token.usage")}
    assert usage == {"input": report.tokens["input"], "output": report.tokens["output"]}
    durations = traced.metric("gen_ai.client.operation.duration")
    assert sum(p.count for p in durations) == report.calls["total"] == 6


def test_content_only_with_the_flag_as_the_genai_conventions_write_it() -> None:
    traced = Traced()
    report = run(Pipeline.from_dict(FAST_PIPELINE), ["bees"], on_start=traced.start(content=True))

    (result,) = report.results()
    chats = {s.attributes["chainfleet.stage"]: s for s in traced.spans if s.name.startswith("chat")}
    sent = json.loads(str(chats["research"].attributes["gen_ai.input.messages"]))
    assert [m["role"] for m in sent] == ["system", "user"]
    assert "Research bees" in sent[1]["parts"][0]["content"]
    replied = json.loads(str(chats["edit"].attributes["gen_ai.output.messages"]))
    assert replied[0]["parts"][0]["content"] == result.outputs["edit"]
    assert replied[0]["finish_reason"] == "stop"


def test_a_failed_item_has_an_error_root_and_the_failed_attempt() -> None:
    clock = VirtualClock()
    provider = Scripted(clock, fail={"R bad": lambda n: InvalidRequest("context too long")})
    traced = Traced()
    on_clock(clock, two_stages(), ["bad", "good"], provider, on_start=traced.start())

    roots = traced.roots()
    assert roots["2"].status.status_code is StatusCode.UNSET
    bad = roots["1"]
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.attributes["chainfleet.item.status"] == "failed"
    assert bad.attributes["error.type"] == "invalid_request"
    (stage,) = traced.children(bad)
    assert stage.status.status_code is StatusCode.ERROR
    (chat,) = traced.children(stage)
    assert chat.attributes["error.type"] == "invalid_request"
    assert "gen_ai.usage.input_tokens" not in chat.attributes


def test_sampling_keeps_a_share_of_the_items_and_every_failed_one() -> None:
    clock = VirtualClock()
    provider = Scripted(clock, fail={"R bad": lambda n: InvalidRequest("no")})
    topics = [f"bad{i}" if i % 10 == 0 else f"ok{i}" for i in range(200)]
    traced = Traced()
    report = on_clock(
        clock, two_stages(), topics, provider, on_start=traced.start(sample=0.25), concurrency=8
    )

    roots = traced.roots()
    failed = {r.id for r in report.results() if r.status == "failed"}
    assert len(failed) == 20
    assert failed <= set(roots)  # every failed item, sampled or not
    kept_ok = len(set(roots) - failed)
    assert 15 < kept_ok < 80  # about a quarter of the 180 others
    trees = {s.context.trace_id for s in traced.spans}
    assert trees == {r.context.trace_id for r in roots.values()}  # no orphan spans of dropped items
    assert all(len(traced.children(r)) >= 1 for r in roots.values())


def test_sampling_nothing_still_exports_the_failed_items_whole() -> None:
    clock = VirtualClock()
    provider = Scripted(clock, fail={"W [R bad": lambda n: InvalidRequest("no")})
    traced = Traced()
    on_clock(clock, two_stages(), ["bad", "ok", "fine"], provider, on_start=traced.start(sample=0.0))

    roots = traced.roots()
    assert list(roots) == ["1"]
    stages = traced.children(roots["1"])
    assert [s.name for s in stages] == ["stage research", "stage write"]
    assert [c.name for s in stages for c in traced.children(s)] == ["chat gpt-x", "chat gpt-x"]


def test_the_limiters_wait_and_a_429_cooldown_are_child_spans_of_the_attempt() -> None:
    clock = VirtualClock()
    provider = Scripted(
        clock, fail={"R a": lambda n: RateLimited("429", retry_after=7.0) if n == 1 else None}
    )
    traced = Traced()
    report = on_clock(
        clock, two_stages(), ["a", "b", "c"], provider, on_start=traced.start(), rpm=60, concurrency=3
    )

    assert report.items_succeeded == 3
    chats = [s for s in traced.spans if s.name == "chat gpt-x"]
    refused = [c for c in chats if c.attributes.get("error.type") == "rate_limited"]
    assert len(refused) == 1 and refused[0].status.status_code is StatusCode.ERROR
    waits = Counter(s.name for s in traced.spans if s.name.startswith("wait "))
    assert waits["wait cooldown"] >= 1 and waits["wait limiter"] >= 1
    for wait in (s for s in traced.spans if s.name.startswith("wait ")):
        parent = next(c for c in chats if c.context.span_id == wait.parent.span_id)
        assert parent.start_time <= wait.start_time <= wait.end_time <= parent.end_time
        assert wait.attributes["chainfleet.wait_s"] > 0
    ok = [c for c in chats if "error.type" not in c.attributes]
    assert {c.attributes["gen_ai.response.model"] for c in ok} == {"gpt-x-2026"}
    assert {c.attributes["gen_ai.provider.name"] for c in ok} == {"openai"}


def test_cached_answers_are_marked_and_not_counted_as_calls(tmp_path: Path) -> None:
    clock = VirtualClock()
    provider = Scripted(clock)
    on_clock(clock, two_stages(), ["a", "b"], provider, cache=str(tmp_path / "cache"))
    traced = Traced()
    clock = VirtualClock()
    report = on_clock(
        clock,
        two_stages(),
        ["a", "b"],
        Scripted(clock),
        cache=str(tmp_path / "cache"),
        on_start=traced.start(),
    )

    assert report.cache_hits == 4
    chats = [s for s in traced.spans if s.name.startswith("chat")]
    assert len(chats) == 4
    assert all(c.attributes["chainfleet.reused"] is True for c in chats)
    assert {c.attributes["chainfleet.reused.source"] for c in chats} == {"cache"}
    assert traced.metric("gen_ai.client.token.usage") == []


def test_a_resumed_runs_stored_results_are_marked_from_the_store(tmp_path: Path) -> None:
    clock = VirtualClock()
    provider = Scripted(clock, fail={"W [R b": lambda n: InvalidRequest("no")})
    on_clock(clock, two_stages(), ["a", "b"], provider, out=tmp_path, cache=False)
    traced = Traced()
    clock = VirtualClock()
    report = on_clock(
        clock, two_stages(), ["a", "b"], Scripted(clock), out=tmp_path, resume=True, cache=False,
        on_start=traced.start(),
    )  # fmt: skip

    assert report.items_succeeded == 2
    root = traced.roots()["2"]
    research, write = traced.children(root)
    (reused,) = traced.children(research)
    assert reused.attributes["chainfleet.reused.source"] == "store"
    (called,) = traced.children(write)
    assert (
        "chainfleet.reused" not in called.attributes and called.attributes["gen_ai.usage.output_tokens"] == 5
    )


def test_an_agents_turns_and_tool_calls_have_spans_of_their_own(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(
        {
            "model": "sim",
            "sim": {"latency": 0},
            "input": "topic",
            "stages": [
                {
                    "name": "research",
                    "prompt": "Research {{ topic }}.",
                    "tools": [{"function": f"{TOOLS}:search"}],
                },
            ],
        }
    )
    agent_tools.CALLS.clear()
    traced = Traced()
    report = run(pipeline, ["bees [[sim:tool_turns=2]]"], out=tmp_path, on_start=traced.start(content=True))

    assert report.items_succeeded == 1
    (stage,) = traced.children(traced.roots()["1"])
    assert stage.attributes["chainfleet.stage.kind"] == "agent"
    steps = traced.children(stage)
    chats = [s for s in steps if s.name == "chat sim"]
    tools = [s for s in steps if s.name == "execute_tool search"]
    assert len(chats) + len(tools) == len(steps)
    assert [c.attributes["chainfleet.agent.turn"] for c in chats] == [1, 2, 3]  # two tool turns, the answer
    assert len(tools) == len(agent_tools.CALLS) >= 2
    assert {t.attributes["chainfleet.agent.turn"] for t in tools} == {1, 2}
    for tool in tools:  # each tool call runs after its turn's reply, before the next turn
        turn = int(tool.attributes["chainfleet.agent.turn"])
        assert chats[turn - 1].end_time <= tool.start_time <= tool.end_time <= chats[turn].start_time
        assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
        assert tool.attributes["gen_ai.tool.call.id"]
        assert str(tool.attributes["gen_ai.tool.call.result"]).startswith("passages about")
    assert [c.attributes["gen_ai.response.finish_reasons"] for c in chats] == [
        ("tool_calls",),
        ("tool_calls",),
        ("stop",),
    ]
    assert read_results(tmp_path)[0]["status"] == "succeeded"


def test_tracing_is_off_unless_asked_and_a_bad_sample_is_refused() -> None:
    clock = VirtualClock()
    assert type(tracer_for(RunSettings(), run_id="r", project="p", clock=clock, env={})) is Tracer
    assert tracing_endpoint(RunSettings(), {}) is None
    assert tracing_endpoint(RunSettings(otel=True), {}) == "http://localhost:4318"
    assert (
        tracing_endpoint(RunSettings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == "http://c:4318"
    )
    assert tracing_endpoint(RunSettings(otel=True, otel_endpoint="http://p:6006"), {}) == "http://p:6006"
    with pytest.raises(ConfigError, match="0.01 keeps 1 in 100"):
        tracer_for(RunSettings(otel=True, otel_sample=2.0), run_id="r", project="p", clock=clock, env={})


def test_the_pipelines_otel_key_turns_tracing_on_with_its_settings() -> None:
    pipeline = two_stages(otel={"endpoint": "http://127.0.0.1:9", "sample": 0.5})
    runner = Runner(pipeline, RunSettings())
    try:
        assert runner.ctx.tracer.on
        assert runner.settings.otel_sample == 0.5 and runner.settings.otel_endpoint == "http://127.0.0.1:9"
    finally:
        runner.ctx.tracer.shutdown()
    assert not Runner(two_stages(), RunSettings()).ctx.tracer.on
    with pytest.raises(ConfigError, match="otel.sample"):
        two_stages(otel={"sample": 3})
