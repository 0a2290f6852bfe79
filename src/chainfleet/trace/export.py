"""Where the spans go: an exporter that warns once and gives up rather than slow or break the run.

(Sampling is decided before any span is made: see :mod:`chainfleet.trace.otel`.)

**A collector that is down.** The OTLP/HTTP exporter retries a refused connection with backoff
for up to its timeout and logs every failure. :class:`OnceExporter` and
:class:`OnceMetricExporter` wrap it around one :class:`Collector`: before the first export a
one-second TCP connect to the receiver tells a dead one at once (a few lines of ours, because
the SDK has no "fail fast" switch); a dead receiver is one warning for the whole run and from
then on every span and metric is dropped at once, so neither the export thread nor the run's
final flush waits on it again. A receiver that answers but refuses a signal (Phoenix answers
404 to metrics) is one warning for that signal. The SDK's own log lines about it are
silenced (the warning says it once). The exporting
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

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["Collector", "OnceExporter", "OnceMetricExporter", "quiet_sdk_logs"]


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
