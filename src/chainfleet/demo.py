"""The classic exercise: three topics through Research -> Write -> Edit, one at a time, then in
parallel, on the built-in simulated model; both times, failures, quality, and the time saved.

With the defaults (1 s a call, concurrency 2) one at a time takes 3 x 3 x 1 s = 9 s and the
parallel run takes 6 s (topics 1 and 2 together, then topic 3): 33% saved. The demo is
:func:`chainfleet.compare.run_compare` on these three topics.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .clock import Clock
from .compare import CompareReport, Display, run_compare
from .pipeline import Pipeline

__all__ = ["DEMO_TOPICS", "DemoReport", "demo_pipeline", "run_demo"]

DEMO_TOPICS = [
    "The rise of heat pumps in cold climates",
    "How container shipping shaped the global economy",
    "Why sleep matters for memory",
]


def demo_pipeline(*, latency: float = 1.0, error_rate: float = 0.0, seed: int = 0) -> Pipeline:
    """The content pipeline of ``examples/content.yaml``, on ``sim`` with the given latency."""
    return Pipeline.from_dict(
        {
            "name": "content",
            "model": "sim",
            "sim": {"latency": latency, "error_rate": error_rate, "seed": seed},
            "input": "topic",
            "stages": [
                {
                    "name": "research",
                    "system": "You are a meticulous research agent.",
                    "prompt": "Research {{ topic }}: the key facts, figures and open questions.",
                    "max_tokens": 800,
                },
                {
                    "name": "write",
                    "system": "You are a clear, engaging writer.",
                    "prompt": "Write an article on {{ topic }} from these notes:\n{{ research }}",
                    "max_tokens": 1200,
                },
                {
                    "name": "edit",
                    "system": "You are a careful editor.",
                    "prompt": "Edit this draft for clarity and accuracy:\n{{ write }}",
                    "max_tokens": 1200,
                },
            ],
        },
        source="demo",
    )


#: the demo's report is a comparison report (kept under its old name)
DemoReport = CompareReport


async def run_demo(
    out: str | os.PathLike[str],
    *,
    concurrency: int = 2,
    latency: float = 1.0,
    error_rate: float = 0.0,
    topics: list[str] | None = None,
    clock: Clock | None = None,
    progress: Callable[[str], Display] | None = None,
) -> CompareReport:
    """Run the demo batch one at a time then in parallel (:func:`~chainfleet.compare.run_compare`);
    write both folders and report.json, replacing an earlier demo's in ``out``."""
    pipeline = demo_pipeline(latency=latency, error_rate=error_rate)
    return await run_compare(
        pipeline,
        topics or DEMO_TOPICS,
        concurrency=concurrency,
        out=out,
        clock=clock,
        progress=progress,
        replace=True,  # the demo's folder is its own: a second demo replaces the first
    )
