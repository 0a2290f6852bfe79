"""The tracer's own CPU per call (issue 24, item 3): :class:`chainfleet.trace.otel.OtelTracer`'s
hooks alone, as a run calls them for items of two one-attempt stages, with a null span exporter
and an in-memory metric reader, so what is measured is making the spans and recording the
metrics (no run, no network).

Printed: CPU per call (``time.process_time``) with every item kept and with ``--sample``'s share
kept (the rest are noted, then dropped at the item's end), and the load average.

Example::

    python benchmarks/otel_hooks.py
    python benchmarks/otel_hooks.py --items 20000 --sample 0.01
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from types import SimpleNamespace

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from chainfleet.clock import SystemClock
from chainfleet.trace.base import AttemptInfo
from chainfleet.trace.otel import OtelTracer, TraceOptions


class Null(SpanExporter):
    """Takes every span, keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_call(items: int, sample: float) -> float:
    """CPU seconds per call for ``items`` items of two stages, one attempt each."""
    clock = SystemClock()
    tracer = OtelTracer(
        TraceOptions(endpoint="http://127.0.0.1:9", sample=sample),
        run_id="bench",
        project="bench",
        clock=clock,
        exporter=Null(),
        metric_reader=InMemoryMetricReader(),
    )
    start = time.process_time()
    for index in range(items):
        chain = SimpleNamespace(item=SimpleNamespace(id=str(index + 1), index=index, fields={}), trace=None)
        tracer.item_started(chain)
        for stage in ("draft", "edit"):
            tracer.stage_started(chain, stage, "llm")
            now = clock.now()
            info = AttemptInfo(
                label=stage, number=1, queued=now, started=now, ended=now, provider="sim", model="sim",
                response_model="sim", max_tokens=400, input_tokens=10, output_tokens=400,
                finish_reason="stop",
            )  # fmt: skip
            tracer.attempt(chain, info)
            tracer.stage_ended(chain, stage)
        tracer.item_ended(chain, "succeeded", None)
    spent = time.process_time() - start
    tracer.shutdown()
    return spent / (2 * items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--sample", type=float, default=0.01)
    args = parser.parse_args()
    print(f"{args.items:,} items x 2 calls; load average {os.getloadavg()[0]:.2f}")
    for sample in (1.0, args.sample):
        print(f"sample {sample:g}: {per_call(args.items, sample) * 1e6:6.1f} us CPU a call")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
