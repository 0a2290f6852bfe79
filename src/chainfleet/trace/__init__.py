"""OpenTelemetry traces of a run (``--otel``): one trace per item, a span per stage, a ``chat``
span per attempt, to any OTLP/HTTP receiver (Arize Phoenix, Langfuse, an OpenTelemetry
collector).

The run holds a :class:`Tracer` on its context: with tracing off the no-op one
(:mod:`chainfleet.trace.base`), and :mod:`opentelemetry` is never imported; with it on,
:class:`chainfleet.trace.otel.OtelTracer`. :func:`tracer_for` decides which.

Example::

    tracer = tracer_for(settings, run_id="r1", project="content", clock=clock)
    ...
    tracer.shutdown()
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

from chainfleet.clock import Clock
from chainfleet.config import RunSettings
from chainfleet.errors import ConfigError
from chainfleet.trace.base import AttemptInfo, Tracer

__all__ = [
    "DEFAULT_ENDPOINT",
    "AttemptInfo",
    "Tracer",
    "check_endpoint",
    "check_sample",
    "tracer_for",
    "tracing_endpoint",
]

#: where OTLP/HTTP goes when nothing says otherwise (the OpenTelemetry default)
DEFAULT_ENDPOINT = "http://localhost:4318"


def check_sample(rate: float, where: str = "--otel-sample") -> float:
    """``rate`` if it is a share of items (0 to 1), else a ``ConfigError`` naming ``where``."""
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"{where}: {rate:g} is not a share of items between 0 and 1 (0.01 keeps 1 in 100)")
    return rate


def check_endpoint(endpoint: str, where: str = "--otel-endpoint") -> str:
    """``endpoint`` if it is an http(s) URL, else a ``ConfigError`` naming ``where``."""
    if not endpoint.startswith(("http://", "https://")) or not endpoint.split("://", 1)[1]:
        raise ConfigError(
            f"{where}: {endpoint!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:4318)"
        )
    return endpoint


def tracing_endpoint(settings: RunSettings, env: Mapping[str, str] | None = None) -> str | None:
    """The OTLP/HTTP endpoint the run exports to, or None when tracing is off: on with
    ``settings.otel`` (``--otel``, the pipeline's ``otel:``) or ``OTEL_EXPORTER_OTLP_ENDPOINT``
    set; the endpoint is ``settings.otel_endpoint``, else that variable, else the default."""
    env = os.environ if env is None else env
    from_env = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    if not settings.otel and from_env is None:
        return None
    return settings.otel_endpoint or from_env or DEFAULT_ENDPOINT


def tracer_for(
    settings: RunSettings, *, run_id: str, project: str, clock: Clock, env: Mapping[str, str] | None = None
) -> Tracer:
    """The run's tracer: the no-op one unless tracing is on (see :func:`tracing_endpoint`).
    Tracing asked for without the SDK installed is a ``ConfigError`` (exit 2, before any call)."""
    endpoint = tracing_endpoint(settings, env)
    if endpoint is None:
        return Tracer()
    check_sample(settings.otel_sample)
    check_endpoint(endpoint)
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        raise ConfigError(
            "tracing (--otel or OTEL_EXPORTER_OTLP_ENDPOINT) needs the OpenTelemetry SDK: "
            "pip install 'chainfleet[otel]'"
        )
    from chainfleet.trace.otel import OtelTracer, TraceOptions

    options = TraceOptions(endpoint=endpoint, sample=settings.otel_sample, content=settings.otel_content)
    return OtelTracer(options, run_id=run_id, project=project, clock=clock)
