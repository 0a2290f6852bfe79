"""``--otel`` on the Ray backend: the workers note what each item did and send it back with its
result, and the driver draws the same traces as a local run of the same pipeline: one trace per
item, a span per stage, a ``chat`` span per attempt with the GenAI attributes, on the run's clock;
with ``--otel-sample 0`` only the failed item is exported.

The driver's tracer is in this process (``on_start`` swaps in one with the SDK's in-memory
exporter), so no receiver is needed: what crosses processes is the workers' notes, which is what
this test is about. One local Ray node for the module, as in test_ray_backend.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chainfleet.limits.retry import RetryPolicy
from chainfleet.pipeline import Pipeline
from chainfleet.runner.api import arun
from chainfleet.runner.core import Runner
from conftest import TOPICS

if importlib.util.find_spec("ray") is None or importlib.util.find_spec("opentelemetry.sdk") is None:
    if os.environ.get("CI"):
        pytest.fail(
            "CI: Ray or the OpenTelemetry SDK is missing (pip install -e '.[ray,otel]')", pytrace=False
        )
    pytest.skip("Ray or the OpenTelemetry SDK is not installed", allow_module_level=True)

from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from chainfleet.trace.otel import OtelTracer, TraceOptions  # noqa: E402

#: every call on "bicycle" fails (a simulated 500): item 5 fails, in its main and retry pass;
#: 30% of the other calls fail once or twice first, so some stages have several chat spans
SIM = {"latency": 0.01, "seed": 0, "error_rate": 0.3, "fail_on": ["bicycle"]}
FAILING = str(TOPICS.index("The history of the bicycle") + 1)


def traced_run(
    pipeline: Pipeline, topics: Path, out: Path, *, sample: float = 1.0, **extra: Any
) -> tuple[list[ReadableSpan], InMemoryMetricReader, Any]:
    """Run with tracing on into an in-memory exporter: the spans, the metrics, the report."""
    exporter, metrics = InMemorySpanExporter(), InMemoryMetricReader()

    def start(runner: Runner) -> None:
        runner.ctx.retry = RetryPolicy(max_attempts=3, base=0.01, jitter=False)
        runner.ctx.tracer = OtelTracer(
            TraceOptions(endpoint="http://127.0.0.1:9", sample=sample),
            run_id=runner.run_id,
            project=pipeline.name,
            clock=runner.ctx.clock,
            exporter=exporter,
            metric_reader=metrics,
        )

    report = asyncio.run(arun(pipeline, topics, out=out, concurrency=4, on_start=start, **extra))
    return list(exporter.get_finished_spans()), metrics, report


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    found = [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]
    return sorted(found, key=lambda s: (s.start_time or 0, s.name))


#: what of a span must be the same on Ray as locally (not its times or ids)
KEPT = (
    "chainfleet.item.status", "error.type", "chainfleet.stage", "chainfleet.stage.kind",
    "chainfleet.attempt", "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
    "gen_ai.request.max_tokens", "gen_ai.response.model", "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens", "gen_ai.response.finish_reasons", "chainfleet.agent.turn",
    "gen_ai.tool.name", "chainfleet.reused", "chainfleet.reused.source",
)  # fmt: skip


def shape(spans: list[ReadableSpan], span: ReadableSpan) -> tuple[Any, ...]:
    """A span and everything under it: names and the attributes in KEPT, in order of start."""
    attrs = span.attributes or {}
    kept = tuple((k, attrs[k]) for k in KEPT if k in attrs)
    return span.name, kept, tuple(shape(spans, c) for c in children(spans, span))


def trees(spans: list[ReadableSpan]) -> dict[str, tuple[Any, ...]]:
    roots = [s for s in spans if s.parent is None]
    return {str((r.attributes or {})["chainfleet.item.id"]): shape(spans, r) for r in roots}


def nested_in_time(spans: list[ReadableSpan], span: ReadableSpan, slack_ns: int = 5_000_000) -> None:
    """Every child starts and ends within its parent (to 5 ms): the workers' clock readings were
    put on the driver's clock."""
    for child in children(spans, span):
        assert child.start_time is not None and child.end_time is not None
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time - slack_ns <= child.start_time <= child.end_time <= span.end_time + slack_ns, (
            span.name,
            child.name,
        )
        nested_in_time(spans, child, slack_ns)


def test_a_ray_item_gets_the_same_trace_as_a_local_one(
    ray_node: str, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    pipeline = Pipeline.from_yaml(write_pipeline(sim=SIM))
    topics = topics_file(TOPICS)
    local_spans, local_metrics, local = traced_run(pipeline, topics, tmp_path / "local")
    before = time.time_ns()
    ray_spans, ray_metrics, remote = traced_run(pipeline, topics, tmp_path / "ray", backend="ray", workers=2)
    after = time.time_ns()
    assert (local.items_succeeded, local.items_failed) == (len(TOPICS) - 1, 1)
    assert (remote.items_succeeded, remote.items_failed) == (len(TOPICS) - 1, 1)

    ray_trees = trees(ray_spans)
    assert sorted(ray_trees) == [str(i) for i in range(1, len(TOPICS) + 1)]  # one trace per item
    assert ray_trees == trees(local_spans)  # the same spans, names and GenAI attributes

    # what that shape is: item > stage research, write, edit > a chat span per attempt
    ok = ray_trees["1"]
    assert ok[0] == "item 1"
    assert [stage[0] for stage in ok[2]] == ["stage research", "stage write", "stage edit"]
    chats = [chat for stage in ok[2] for chat in stage[2]]
    assert len(chats) >= 3 and all(chat[0] == "chat sim" for chat in chats)
    done = dict(chats[-1][1])
    assert done["gen_ai.operation.name"] == "chat" and done["gen_ai.request.max_tokens"] == 1200
    assert done["gen_ai.usage.input_tokens"] > 0 and done["gen_ai.usage.output_tokens"] > 0
    retried = [c for t in ray_trees.values() for s in t[2] for c in s[2] if dict(c[1]).get("error.type")]
    assert any(dict(c[1])["chainfleet.attempt"] < 3 for c in retried)  # a retried call: its failed try too
    # the failed item: its research stage in the main pass and the retry pass, 3 attempts each
    failed = ray_trees[FAILING]
    assert dict(failed[1])["chainfleet.item.status"] == "failed"
    assert [(stage[0], len(stage[2])) for stage in failed[2]] == [("stage research", 3)] * 2

    # on the driver's clock: within the run, children within their parents
    for span in ray_spans:
        assert span.start_time is not None and before <= span.start_time <= (span.end_time or 0) <= after
    for root in (s for s in ray_spans if s.parent is None):
        nested_in_time(ray_spans, root)
    # and so are the calls table's times (seconds since the run's start), which report.html draws
    with sqlite3.connect(tmp_path / "ray" / "run.db") as db:
        first, last = db.execute("SELECT min(queued), max(ended) FROM calls").fetchone()
    assert 0 <= first <= last <= (after - before) / 1e9

    # the metrics count every call on Ray too
    def calls(reader: InMemoryMetricReader) -> int:
        data = reader.get_metrics_data()
        assert data is not None
        return sum(
            point.count
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "gen_ai.client.operation.duration"
            for point in metric.data.data_points  # type: ignore[union-attr]
        )

    assert (
        calls(ray_metrics)
        == calls(local_metrics)
        == len(retried)
        + sum(1 for t in ray_trees.values() for s in t[2] for c in s[2] if "error.type" not in dict(c[1]))
    )


def test_sampling_on_ray_keeps_the_failed_item_only(
    ray_node: str, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    pipeline = Pipeline.from_yaml(write_pipeline(sim=SIM))
    spans, _, report = traced_run(
        pipeline, topics_file(TOPICS), tmp_path / "ray", sample=0.0, backend="ray", workers=2
    )
    assert report.items_failed == 1
    kept = trees(spans)
    assert sorted(kept) == [FAILING]
    assert [stage[0] for stage in kept[FAILING][2]] == ["stage research"] * 2


def unordered(shape_: tuple[Any, ...]) -> tuple[Any, ...]:
    """A shape with each span's children sorted by their own shape (a multiset: parallel tool
    calls may start in another order on another process)."""
    name, kept, kids = shape_
    return name, kept, tuple(sorted((unordered(k) for k in kids), key=repr))


def test_an_agent_stage_on_ray_has_its_turns_and_tool_calls_in_its_trace(
    ray_node: str, topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    tools = "unit.chain.agent_tools"
    pipeline = Pipeline.from_dict(
        {
            "model": "sim",
            "sim": {"latency": 0.01},
            "input": "topic",
            "stages": [
                {
                    "name": "research",
                    "prompt": "Research {{ topic }}.",
                    "tools": [{"function": f"{tools}:search"}, {"function": f"{tools}:broken"}],
                },
                {"name": "write", "prompt": "Write on {{ topic }} from {{ research }}"},
            ],
        }
    )
    topics = topics_file(TOPICS[:3])
    local_spans, _, local = traced_run(pipeline, topics, tmp_path / "local")
    ray_spans, _, remote = traced_run(pipeline, topics, tmp_path / "ray", backend="ray", workers=2)
    assert local.items_succeeded == remote.items_succeeded == 3
    ray_trees = trees(ray_spans)
    assert {k: unordered(v) for k, v in ray_trees.items()} == {
        k: unordered(v) for k, v in trees(local_spans).items()
    }
    research = ray_trees["1"][2][0]
    assert research[0] == "stage research" and dict(research[1])["chainfleet.stage.kind"] == "agent"
    turns = [dict(step[1]).get("chainfleet.agent.turn") for step in research[2] if step[0] == "chat sim"]
    tools_called = [step for step in research[2] if step[0].startswith("execute_tool ")]
    assert len(turns) >= 2 and None not in turns  # every model turn a chat span with its turn
    assert tools_called and all("chainfleet.agent.turn" in dict(t[1]) for t in tools_called)
    for root in (s for s in ray_spans if s.parent is None):
        nested_in_time(ray_spans, root)
