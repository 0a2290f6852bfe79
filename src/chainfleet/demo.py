"""The classic exercise: three topics through Research -> Write -> Edit, one at a time, then in
parallel, on the built-in simulated model; both times, failures, quality, and the time saved.

With the defaults (1 s a call, concurrency 2) one at a time takes 3 x 3 x 1 s = 9 s and the
parallel run takes 6 s (topics 1 and 2 together, then topic 3): 33% saved. The demo is
:func:`chainfleet.compare.run_compare` on these three topics.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .clock import Clock
from .compare import CompareReport, Display, run_compare
from .pipeline import Pipeline

__all__ = ["DEMO_TOPICS", "DemoReport", "demo_pipeline", "run_demo"]

DEMO_TOPICS = [
    "The rise of heat pumps in cold climates",
    "How container shipping shaped the global economy",
    "Why sleep matters for memory",
]


def demo_pipeline(
    *, latency: float = 1.0, error_rate: float = 0.0, seed: int = 0, review: bool = False
) -> Pipeline:
    """The content pipeline of ``examples/content.yaml``, on ``sim`` with the given latency;
    with ``review`` every edited article waits for a person (``review: always`` on edit)."""
    data: dict[str, Any] = {
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
    }
    if review:
        data["stages"][-1]["review"] = "always"
    return Pipeline.from_dict(data, source="demo")


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
    review: bool = False,
) -> CompareReport:
    """Run the demo batch one at a time then in parallel (:func:`~chainfleet.compare.run_compare`);
    write both folders and report.json, replacing an earlier demo's in ``out``.

    With ``review`` every edited article waits for a person; the pipeline and topics are
    written into ``out`` so ``chainfleet resume OUT/parallel`` can go on after the review."""
    pipeline = demo_pipeline(latency=latency, error_rate=error_rate, review=review)
    topics = topics or DEMO_TOPICS
    extra: dict[str, Any] = {}
    if review:
        extra["settings"] = _resumable(Path(out), pipeline, topics, concurrency)
    return await run_compare(
        pipeline,
        topics,
        concurrency=concurrency,
        out=out,
        clock=clock,
        progress=progress,
        replace=True,  # the demo's folder is its own: a second demo replaces the first
        **extra,
    )


def _resumable(out: Path, pipeline: Pipeline, topics: list[str], concurrency: int) -> dict[str, Any]:
    """Write the demo's pipeline and topics into ``out``; the settings `chainfleet resume` reads."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    pipeline_file, input_file = out / "pipeline.yaml", out / "topics.txt"
    data = pipeline.model_dump(exclude_defaults=True, mode="json")
    pipeline_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    input_file.write_text("".join(f"{topic}\n" for topic in topics), encoding="utf-8")
    options = {"concurrency": concurrency, "max_concurrency": 64, "rpm": None, "tpm": None, "model": None}
    options |= {"max_attempts": 4, "retry_passes": 1, "cache": None, "no_cache": True}
    options |= {"max_cost": None, "max_tokens": None}
    return {
        "pipeline_file": str(pipeline_file.resolve()),
        "input_file": str(input_file.resolve()),
        "cli": options,
    }
