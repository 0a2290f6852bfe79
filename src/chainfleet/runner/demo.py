"""The classic exercise: three topics through Research -> Write -> Edit, one at a time, then in
parallel, on the built-in simulated model; both times, failures, quality, gate outcomes, and the
time saved.

Research hands write a contract (structured facts, sources, open questions); write's draft
passes a gate (a word count and a judge's score of 8.5 of 10) or is revised with the judge's
feedback. Each call takes 1 s by default, a judge's too, so a topic takes 4 s (research, write,
judge, edit) plus 2 s for each revision (write again, judge again). On the simulated model the
first two topics pass at once and the third passes after two revisions: 4 + 4 + 8 = 16 s one at
a time; with 2 in flight topics 1 and 2 take 4 s together, then topic 3 8 s: 12 s, 25% saved.
The demo is :func:`chainfleet.runner.compare.run_compare` on these three topics: the gates decide the
same at both concurrencies, and it says so ("gate outcomes identical").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chainfleet.clock import Clock
from chainfleet.pipeline import Pipeline
from chainfleet.runner.compare import CompareReport, Display, run_compare

__all__ = ["DEMO_TOPICS", "RESEARCH_SCHEMA", "DemoReport", "demo_pipeline", "run_demo"]

DEMO_TOPICS = [
    "The rise of heat pumps in cold climates",
    "How container shipping shaped the global economy",
    "Why sleep matters for memory",
]


#: what research hands write: facts, sources and open questions as structured data
RESEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 5},
        "sources": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "url": {"type": "string"}},
                "required": ["title", "url"],
                "additionalProperties": False,
            },
            "minItems": 1,
            "maxItems": 3,
        },
        "open_questions": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["facts", "sources", "open_questions"],
    "additionalProperties": False,
}

WRITE_PROMPT = """Write an article on {{ topic }} from these notes:
{{ research.facts | join("\n") }}
Sources: {% for source in research.sources %}{{ source.url }} {% endfor %}
Open questions: {{ research.open_questions | join("; ") }}
{% if feedback %}
An editor sent back your previous draft:
{{ previous }}
Their feedback: {{ feedback }}
{% endif %}"""


#: the simulated model's seed for the demo: its texts, and so the judge's scores, follow from it;
#: this one gives the story told above (topics 1 and 2 pass at once, topic 3 after two revisions)
#: with the research read about each topic (it was 0 while the sim read the system line)
DEMO_SEED = 31


def demo_pipeline(
    *,
    latency: float = 1.0,
    error_rate: float = 0.0,
    seed: int = DEMO_SEED,
    review: bool = False,
    gates: bool = True,
) -> Pipeline:
    """The content pipeline on ``sim`` with the given latency: research hands write a contract
    (facts, sources, open questions), write's draft must pass a gate (at least 100 words and a
    judge's score of 8.5 of 10) or is revised with the judge's feedback (twice at most, then
    accepted and flagged), and edit polishes it. With ``review`` every edited article waits for
    a person (``review: always`` on edit). ``gates=False`` gives the plain three-call chain of
    ``examples/content.yaml`` (no contract, no gate, no judge: three calls an item)."""
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
                "output": RESEARCH_SCHEMA,
            },
            {
                "name": "write",
                "system": "You are a clear, engaging writer.",
                "prompt": WRITE_PROMPT,
                "max_tokens": 1200,
                "gate": [
                    {"min_words": 100},
                    {
                        "name": "editor",
                        "judge": {"rubric": "a clear, accurate article on {{ topic }}", "threshold": 8.5},
                    },
                ],
                "on_fail": "revise",
                "max_revisions": 2,
                "then": "accept",
            },
            {
                "name": "edit",
                "system": "You are a careful editor.",
                "prompt": "Edit this draft for clarity and accuracy:\n{{ write }}",
                "max_tokens": 1200,
            },
        ],
    }
    if not gates:
        research, write = data["stages"][0], data["stages"][1]
        del research["output"]
        for key in ("gate", "on_fail", "max_revisions", "then"):
            del write[key]
        write["prompt"] = "Write an article on {{ topic }} from these notes:\n{{ research }}"
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
    """Run the demo batch one at a time then in parallel (:func:`~chainfleet.runner.compare.run_compare`);
    write both folders and report.json, replacing an earlier demo's in ``out``.

    With ``review`` every edited article waits for a person; the pipeline and topics are
    written into ``out`` so ``chainfleet resume OUT/parallel`` can go on after the review."""
    pipeline = demo_pipeline(latency=latency, error_rate=error_rate, review=review)
    topics = topics or DEMO_TOPICS
    extra: dict[str, Any] = {}
    if review:
        extra["saved"] = _resumable(Path(out), pipeline, topics, concurrency)
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
