"""Where the spans go: per-item sampling that always keeps failed items, and an exporter that
warns once and gives up rather than slow or break the run.

**Sampling at the item's end.** ``--otel-sample 0.01`` keeps one trace in a hundred, but a
failed item must always be exported, and whether an item fails is known only when it ends. A
head sampler (OpenTelemetry's ``TraceIdRatioBased``) decides when the root span *starts*, too
early. So every span is recorded, and :class:`ItemSampling`, a span processor, holds the ended
spans of each trace in memory until that trace's root (the item) ends: then it passes them all
on if the trace id falls in the sampled share (the same test as ``TraceIdRatioBased``:
``trace_id``'s low 64 bits under ``rate * 2**64``, so a trace id decides the same way
anywhere) or if the root's status is an error, and drops them otherwise. The buffer holds only
the items in flight (at most ``concurrency`` of them), so memory does not grow with the run.
With the rate at 1 nothing is held: spans go on as they end.

**A collector that is down.** The OTLP/HTTP exporter retries a refused connection with backoff
for up to its timeout and logs every failure. :class:`OnceExporter` and
:class:`OnceMetricExporter` wrap it around one :class:`Collector`: before the first export a
one-second TCP connect to the receiver tells a dead one at once (a few lines of ours, because
the SDK has no "fail fast" switch); a dead receiver is one warning for the whole run and from
then on every span and metric is dropped at once, so neither the export thread nor the run's
final flush waits on it again. A receiver that answers but refuses a signal (Phoenix answers
404 to metrics) is one warning for that signal.
The SDK's own log lines about it are silenced (the warning says it once). The exporting
itself happens on the SDK's background thread (``BatchSpanProcessor``): the run's event loop
never waits for the network.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

__all__ = ["Collector", "ItemSampling", "OnceExporter", "OnceMetricExporter", "quiet_sdk_logs", "sampled"]

_TRACE_ID_LOW = (1 << 64) - 1


def sampled(trace_id: int, rate: float) -> bool:
    """Whether a trace falls in the sampled share ``rate`` (as ``TraceIdRatioBased`` decides)."""
    return rate >= 1.0 or (trace_id & _TRACE_ID_LOW) < round(rate * (1 << 64))


class ItemSampling(SpanProcessor):
    """Passes each ended span on to ``then``, holding a trace's spans until its root ends when
    ``rate`` is under 1; see the module docstring."""

    def __init__(self, then: SpanProcessor, rate: float) -> None:
        self.then, self.rate = then, rate
        self._held: dict[int, list[ReadableSpan]] = {}
        self._lock = threading.Lock()
        #: traces dropped by sampling and kept though unsampled (failed), for the run's note
        self.dropped = 0
        self.kept_failed = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.then.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.rate >= 1.0:
            self.then.on_end(span)
            return
        context = span.context
        assert context is not None  # (an SDK span always has one)
        trace_id = context.trace_id
        with self._lock:
            if span.parent is not None:
                self._held.setdefault(trace_id, []).append(span)
                return
            held = self._held.pop(trace_id, [])
        failed = span.status.status_code is StatusCode.ERROR
        if not sampled(trace_id, self.rate) and not failed:
            self.dropped += 1
            return
        if failed and not sampled(trace_id, self.rate):
            self.kept_failed += 1
        for child in held:
            self.then.on_end(child)
        self.then.on_end(span)

    def shutdown(self) -> None:
        self._held.clear()  # items that never ended (a hard stop): their roots never came
        self.then.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.then.force_flush(timeout_millis)


class Collector:
    """The receiver's state, shared by the span and metric exporters: found down (nothing is
    sent from then on, one warning said it), or refusing one signal (one warning for that)."""

    def __init__(self, endpoint: str, warn: Callable[[str], None]) -> None:
        self.endpoint, self.warn = endpoint, warn
        self.down = False
        self.refused: set[str] = set()
        self._probed = False
        self._lock = threading.Lock()

    def usable(self, what: str) -> bool:
        """Whether to try sending ``what`` now: the first time, after a quick connect to the
        receiver (a refused or unanswered connect is the one warning, at once, instead of the
        SDK's retries for seconds)."""
        with self._lock:
            if not self._probed:
                self._probed = True
                problem = _unreachable(self.endpoint)
                if problem is not None:
                    self._is_down(problem)
            return not self.down and what not in self.refused

    def failed(self, what: str, error: BaseException | None = None) -> None:
        with self._lock:
            if error is not None and _connection_error(error):
                self._is_down(f"{type(error).__name__}")
            elif what not in self.refused and not self.down:
                self.refused.add(what)
                self.warn(
                    f"tracing: {self.endpoint} did not take the run's {what} (is an OTLP/HTTP receiver "
                    f"there? Phoenix takes traces, not metrics); the run goes on without exporting them"
                )

    def _is_down(self, why: str) -> None:
        if not self.down:
            self.down = True
            self.warn(
                f"tracing: the collector at {self.endpoint} is not reachable ({why}); the run goes on "
                "without exporting traces or metrics"
            )


def _unreachable(endpoint: str) -> str | None:
    """Why a TCP connect to ``endpoint``'s host and port fails within a second (None: it works)."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "localhost", port), timeout=1.0):
            return None
    except OSError as exc:
        return "connection refused" if isinstance(exc, ConnectionRefusedError) else type(exc).__name__


def _connection_error(error: BaseException) -> bool:
    return isinstance(error, OSError) or "Connection" in type(error).__name__


class OnceExporter(SpanExporter):
    """A span exporter that stops at the collector's first failure (see :class:`Collector`)."""

    def __init__(self, inner: SpanExporter, collector: Collector) -> None:
        self.inner, self.collector = inner, collector
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.collector.usable("spans"):
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter must never break the run
            self.collector.failed("spans", exc)
            return SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.collector.failed("spans")
        else:
            self.exported += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class OnceMetricExporter(MetricExporter):
    """The same for metrics (a trace-only receiver such as Phoenix answers 404: one warning)."""

    def __init__(self, inner: MetricExporter, collector: Collector) -> None:
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self.inner, self.collector = inner, collector

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if not self.collector.usable("metrics"):
            return MetricExportResult.FAILURE
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception as exc:  # an exporter must never break the run
            self.collector.failed("metrics", exc)
            return MetricExportResult.FAILURE
        if result is not MetricExportResult.SUCCESS:
            self.collector.failed("metrics")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


#: the SDK's loggers that report failed exports (each retry, each batch)
SDK_LOGGERS = (
    "opentelemetry.exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.metrics._internal.export",
)


def quiet_sdk_logs() -> None:
    """Silence the SDK's export log lines (every retry, every failed batch): the exporter
    wrappers above say it once, in a line of ours."""
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
