"""The classic exercise: three topics through Research -> Write -> Edit, one at a time, then in
parallel, on the built-in simulated model; both times, failures, quality, and the time saved.

With the defaults (1 s a call, concurrency 2) one at a time takes 3 x 3 x 1 s = 9 s and the
parallel run takes 6 s (topics 1 and 2 together, then topic 3): 33% saved.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clock import Clock
from .pipeline import Pipeline
from .report import RunReport
from .runner import arun

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


@dataclass
class DemoReport:
    sequential: RunReport
    parallel: RunReport
    outputs_identical: bool

    @property
    def time_saved_pct(self) -> float | None:
        seq = self.sequential.wall_seconds
        return None if seq <= 0 else 100.0 * (1 - self.parallel.wall_seconds / seq)

    def to_dict(self) -> dict[str, Any]:
        saved = self.time_saved_pct
        return {
            "sequential": self.sequential.to_dict(),
            "parallel": self.parallel.to_dict(),
            "time_saved_pct": None if saved is None else round(saved, 1),
            "outputs_identical": self.outputs_identical,
        }


async def run_demo(
    out: str | os.PathLike[str],
    *,
    concurrency: int = 2,
    latency: float = 1.0,
    error_rate: float = 0.0,
    topics: list[str] | None = None,
    clock: Clock | None = None,
) -> DemoReport:
    """Run the demo batch sequentially then in parallel; write both folders and report.json."""
    out = Path(out)
    pipeline = demo_pipeline(latency=latency, error_rate=error_rate)
    topics = topics or DEMO_TOPICS
    sequential = await arun(pipeline, topics, concurrency=1, out=out / "sequential", clock=clock)
    parallel = await arun(pipeline, topics, concurrency=concurrency, out=out / "parallel", clock=clock)
    same = sequential.outputs() == parallel.outputs()
    demo = DemoReport(sequential=sequential, parallel=parallel, outputs_identical=same)
    (out / "report.json").write_text(json.dumps(demo.to_dict(), indent=2) + "\n", encoding="utf-8")
    return demo
