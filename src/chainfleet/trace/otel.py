"""The tracer that exports: OpenTelemetry spans and metrics over OTLP/HTTP (``--otel``).

Imported only when tracing is on (it imports the ``opentelemetry`` SDK, the ``otel`` extra).

The shape of a run's traces (one trace per item)::

    item 3                         chainfleet.item.id, .status, session.id (the run id)
    ├── stage research             chainfleet.stage, openinference.span.kind CHAIN
    │   ├── chat gpt-4o-mini       gen_ai.* (one per attempt: a retry is a second one)
    │   │   ├── wait cooldown      (a 429 closed the model's gate)
    │   │   └── wait limiter       (requests or tokens per minute)
    │   └── chat gpt-4o-mini
    └── stage edit                 (an agent stage: its turns' chat spans and execute_tool spans)

The ``chat`` spans follow OpenTelemetry's GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.request.max_tokens``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens``/``output_tokens``,
``gen_ai.response.finish_reasons``, ``error.type``, and with ``--otel-content`` the
``gen_ai.input.messages``/``gen_ai.output.messages``), and carry OpenInference's few names
(``openinference.span.kind``, ``llm.token_count.*``, ``input.value``) so Phoenix shows them as
LLM spans. A call answered without being made (a stage result from the store, a cached response,
a code chain's journal) is a ``chat`` span marked ``chainfleet.reused`` with its source. A code
chain's calls nest under the item's root (its stages are labels, not spans).

**Drawn at the item's end, so sampling can keep failed items.** ``--otel-sample 0.01`` keeps one
item in a hundred, but a failed item must always be exported, and whether an item fails is known
only when it ends; a head sampler (OpenTelemetry's ``TraceIdRatioBased``) decides when the root
span *starts*, too early. So while an item runs the tracer only notes what happened, as small
records on ``chain.trace`` (:class:`~chainfleet.trace.notes.ItemTrace`: its stages with their
start and end, each attempt's :class:`~chainfleet.trace.base.AttemptInfo`, reused calls, tool
calls); when the item's outcome is kept, :meth:`OtelTracer.item_ended` decides (failed: always;
else a random draw under the rate) and only then makes the SDK spans, all at once, with the
recorded clock readings as their start and end times. An item not kept costs its notes and
nothing of the SDK's, which is what makes a 1% sample cheap; the notes are held only for the
items in flight. The run clock's readings (the ones the calls table keeps) are mapped to wall
time once at the start, so a test on a virtual clock gets consistent spans without waiting. On
the Ray backend the workers keep the notes and send them with each finished chain
(:mod:`chainfleet.trace.notes`); the driver's tracer takes them in and draws the same spans
here.

Metrics: ``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration`` histograms (every
call, sampled or not), to the same endpoint. A collector that is down: see
:mod:`chainfleet.trace.export`.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from chainfleet.clock import Clock
from chainfleet.trace.base import AttemptInfo
from chainfleet.trace.export import Collector, OnceExporter, OnceMetricExporter, quiet_sdk_logs
from chainfleet.trace.notes import ItemTrace, NotingTracer, StageNote, Step

__all__ = ["OtelTracer", "TraceOptions"]

#: how long one export may take before it counts as failed (the SDK's default is 10 s)
EXPORT_TIMEOUT = 5.0


@dataclass(frozen=True, kw_only=True)
class TraceOptions:
    """Where and what to export: the OTLP/HTTP base ``endpoint`` (``/v1/traces`` and
    ``/v1/metrics`` are added), the share of items sampled, whether text goes in."""

    endpoint: str
    sample: float = 1.0
    content: bool = False


def _resource_attributes(project: str) -> dict[str, str]:
    """The service's name and Phoenix's project (the pipeline's name), unless the environment
    names them (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, which the SDK reads)."""
    found = {}
    given = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in given:
        found["service.name"] = "chainfleet"
    if "openinference.project.name=" not in given:
        found["openinference.project.name"] = project
    return found


def _warn(message: str) -> None:
    print(f"chainfleet: warning: {message}", file=sys.stderr, flush=True)


class OtelTracer(NotingTracer):
    """Exports a run's traces; see the module docstring. ``exporter`` and ``metric_reader``
    replace the OTLP ones (tests pass the SDK's in-memory ones)."""

    on = True

    def __init__(
        self,
        options: TraceOptions,
        *,
        run_id: str,
        project: str,
        clock: Clock,
        exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
        warn: Callable[[str], None] = _warn,
    ) -> None:
        super().__init__(clock, content=options.content)
        self.options, self.run_id = options, run_id
        self._wall0 = time.time_ns()
        self._clock0 = clock.now()
        resource = Resource.create(_resource_attributes(project))
        base = options.endpoint.rstrip("/")
        processor: SpanProcessor
        self.collector = Collector(base, warn)
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            quiet_sdk_logs()
            self.exporter: SpanExporter = OnceExporter(
                OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=EXPORT_TIMEOUT), self.collector
            )
            processor = BatchSpanProcessor(self.exporter, export_timeout_millis=int(EXPORT_TIMEOUT * 1000))
        else:
            self.exporter = exporter
            processor = SimpleSpanProcessor(exporter)
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(processor)
        self._draw = random.Random()
        #: items whose trace was kept though outside the sample (failed), and items dropped
        self.kept_failed = 0
        self.dropped = 0
        self.tracer = self.provider.get_tracer("chainfleet")
        if metric_reader is None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            metrics = OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=EXPORT_TIMEOUT)
            metric_reader = PeriodicExportingMetricReader(
                OnceMetricExporter(metrics, self.collector), export_timeout_millis=EXPORT_TIMEOUT * 1000
            )
        self.meters = MeterProvider(resource=resource, metric_readers=[metric_reader])
        meter = self.meters.get_meter("chainfleet")
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used per model call"
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="The duration of one model call attempt"
        )

    def _ns(self, at: float) -> int:
        """A run-clock reading as wall time in nanoseconds."""
        return self._wall0 + int((at - self._clock0) * 1e9)

    # -- the item's end: keep it or not, and draw its spans -----------------------------------------

    def item_ended(self, chain: Any, status: str, error: Mapping[str, Any] | None) -> None:
        held: ItemTrace | None = chain.trace
        if held is None:
            return
        chain.trace = None
        failed = status == "failed"
        if not failed and self._draw.random() >= self.options.sample:
            self.dropped += 1
            return
        if failed and self.options.sample < 1.0:
            self.kept_failed += 1
        now = self.clock.now()
        item = chain.item
        attrs: dict[str, Any] = {
            "chainfleet.item.id": str(item.id),
            "chainfleet.item.index": item.index,
            "chainfleet.item.status": status,
            "chainfleet.run.id": self.run_id,
            "session.id": self.run_id,
            "openinference.span.kind": "CHAIN",
        }
        if self.content:
            attrs["input.value"] = json.dumps(item.fields, default=str, ensure_ascii=False)
        if error is not None:
            attrs["error.type"] = str(error.get("type") or "error")
            if error.get("stage"):
                attrs["chainfleet.item.failed_stage"] = str(error["stage"])
        root = self.tracer.start_span(
            f"item {item.id}",
            context=trace.set_span_in_context(trace.INVALID_SPAN),  # a new trace, whatever is current
            start_time=self._ns(held.started),
            attributes=attrs,
        )
        inside = trace.set_span_in_context(root)
        for stage in held.stages:
            self._stage(stage, inside, now)
        for step in held.steps:
            self._step(step, inside)
        if failed:
            root.set_status(Status(StatusCode.ERROR, str((error or {}).get("message") or "failed")[:500]))
        root.end(end_time=self._ns(now))

    def _stage(self, stage: StageNote, parent: Any, now: float) -> None:
        span = self.tracer.start_span(
            f"stage {stage.name}",
            context=parent,
            start_time=self._ns(stage.started),
            attributes={
                "chainfleet.stage": stage.name,
                "chainfleet.stage.kind": stage.kind,
                "session.id": self.run_id,
                "openinference.span.kind": "AGENT" if stage.kind == "agent" else "CHAIN",
            },
        )
        inside = trace.set_span_in_context(span)
        for step in stage.steps:
            self._step(step, inside)
        if stage.error_type is not None:
            span.set_attribute("error.type", stage.error_type)
            span.set_status(Status(StatusCode.ERROR, stage.error_message))
        span.end(end_time=self._ns(stage.ended if stage.ended is not None else now))

    def _step(self, step: Step, parent: Any) -> None:
        kind, what, turn = step
        if kind == "chat":
            self._chat(what, turn, parent)
        elif kind == "reused":
            self._reused(*what, parent=parent)
        else:
            self._tool(*what, turn=turn, parent=parent)

    def _chat(self, info: AttemptInfo, turn: int | None, parent: Any) -> None:
        model = info.model or info.label
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "session.id": self.run_id,
            "chainfleet.stage": info.label,
            "chainfleet.attempt": info.number,
            "openinference.span.kind": "LLM",
            "llm.model_name": model,
        }
        if info.provider:
            attrs["gen_ai.provider.name"] = info.provider
        if info.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = info.max_tokens
        if info.limiter_wait or info.cooldown_wait:
            attrs["chainfleet.limiter_wait_s"] = info.limiter_wait
            attrs["chainfleet.cooldown_wait_s"] = info.cooldown_wait
        if turn is not None:
            attrs["chainfleet.agent.turn"] = turn
        if info.error is None:
            attrs["gen_ai.response.model"] = info.response_model or model
            attrs["gen_ai.usage.input_tokens"] = info.input_tokens
            attrs["gen_ai.usage.output_tokens"] = info.output_tokens
            attrs["llm.token_count.prompt"] = info.input_tokens
            attrs["llm.token_count.completion"] = info.output_tokens
            attrs["llm.token_count.total"] = info.input_tokens + info.output_tokens
            if info.finish_reason:
                attrs["gen_ai.response.finish_reasons"] = (info.finish_reason,)
        else:
            attrs["error.type"] = info.error
            if info.backoff:
                attrs["chainfleet.backoff_s"] = info.backoff
        if self.content:
            attrs |= self._content(info)
        span = self.tracer.start_span(
            f"chat {model}",
            context=parent,
            kind=SpanKind.CLIENT,
            start_time=self._ns(info.queued),
            attributes=attrs,
        )
        self._waits(span, info)
        if info.error is not None:
            span.set_status(Status(StatusCode.ERROR, (info.error_message or info.error)[:500]))
        span.end(end_time=self._ns(info.ended))

    def _waits(self, span: Span, info: AttemptInfo) -> None:
        """The time before the call went out, as child spans: the 429 cooldown, the limiter."""
        at = info.queued
        context = trace.set_span_in_context(span)
        for name, seconds in (("wait cooldown", info.cooldown_wait), ("wait limiter", info.limiter_wait)):
            if seconds > 0:
                wait = self.tracer.start_span(
                    name, context=context, start_time=self._ns(at), attributes={"chainfleet.wait_s": seconds}
                )
                at += seconds
                wait.end(end_time=self._ns(at))

    def _content(self, info: AttemptInfo) -> dict[str, Any]:
        """The prompt and reply as the GenAI conventions write them (and as Phoenix reads them)."""
        plain = [(str(m.get("role") or "user"), str(m.get("content") or "")) for m in info.messages]
        sent = [{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in plain]
        found: dict[str, Any] = {
            "gen_ai.input.messages": json.dumps(sent, ensure_ascii=False),
            "input.value": json.dumps(
                [{"role": role, "content": text} for role, text in plain], ensure_ascii=False
            ),
            "input.mime_type": "application/json",
        }
        if info.reply is not None:
            reply = {"role": "assistant", "parts": [{"type": "text", "content": info.reply}]}
            if info.finish_reason:
                reply["finish_reason"] = info.finish_reason
            found["gen_ai.output.messages"] = json.dumps([reply], ensure_ascii=False)
            found["output.value"] = info.reply
        return found

    def _measure(self, info: AttemptInfo, model: str) -> None:
        attrs: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
        if info.provider:
            attrs["gen_ai.provider.name"] = info.provider
        if info.error is not None:
            self.duration.record(max(0.0, info.ended - info.started), attrs | {"error.type": info.error})
            return
        self.duration.record(max(0.0, info.ended - info.started), attrs)
        self.token_usage.record(info.input_tokens, attrs | {"gen_ai.token.type": "input"})
        self.token_usage.record(info.output_tokens, attrs | {"gen_ai.token.type": "output"})

    def _reused(self, label: str, model: str | None, source: str, at: float, *, parent: Any) -> None:
        name = model or label
        span = self.tracer.start_span(
            f"chat {name}",
            context=parent,
            kind=SpanKind.CLIENT,
            start_time=self._ns(at),
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": name,
                "session.id": self.run_id,
                "chainfleet.stage": label,
                "chainfleet.reused": True,
                "chainfleet.reused.source": source,
                "openinference.span.kind": "LLM",
            },
        )
        span.end(end_time=self._ns(at))

    def _tool(
        self,
        name: str,
        call_id: str,
        started: float,
        ended: float,
        error: bool,
        arguments: Any,
        result: str | None,
        *,
        turn: int | None,
        parent: Any,
    ) -> None:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "session.id": self.run_id,
            "openinference.span.kind": "TOOL",
            "tool.name": name,
        }
        if call_id:
            attrs["gen_ai.tool.call.id"] = call_id
        if turn is not None:
            attrs["chainfleet.agent.turn"] = turn
        if self.content:
            attrs["gen_ai.tool.call.arguments"] = json.dumps(arguments, default=str, ensure_ascii=False)
            if result is not None:
                attrs["gen_ai.tool.call.result"] = result
        span = self.tracer.start_span(
            f"execute_tool {name}", context=parent, start_time=self._ns(started), attributes=attrs
        )
        if error:
            span.set_attribute("error.type", "tool_error")
            span.set_status(Status(StatusCode.ERROR, "the tool failed"))
        span.end(end_time=self._ns(ended))

    def shutdown(self) -> None:
        """Flush and stop: bounded by the exporters' timeouts, and at once when the collector
        was found down (the wrappers drop what is left)."""
        try:
            self.provider.shutdown()
        except Exception as exc:  # the run's result never depends on its traces
            _warn(f"tracing: the last spans were not sent ({type(exc).__name__})")
        try:
            self.meters.shutdown(timeout_millis=EXPORT_TIMEOUT * 1000)
        except Exception as exc:
            _warn(f"tracing: the metrics were not sent ({type(exc).__name__})")
