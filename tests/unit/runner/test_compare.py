"""``run_compare`` and ``chainfleet compare``: one input one at a time, then in parallel."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import chainfleet.cli.compare  # noqa: F401 - registers the command
from chainfleet import Completion, CompletionRequest, Pipeline, Provider, Stage, VirtualClock
from chainfleet.cli import cli
from chainfleet.runner.compare import run_compare
from chainfleet.runner.demo import DEMO_TOPICS, demo_pipeline, run_demo
from conftest import TOPICS, pipeline_data, read_results

REPORT_KEYS = {"sequential", "parallel", "time_saved_pct", "outputs_identical", "quality"}
SIX = [f"topic {i}: the history of the bicycle in city {i}" for i in range(6)]


def chainfleet(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_compare_on_sim_saves_time_and_keeps_outputs(tmp_path: Path) -> None:
    out = tmp_path / "cmp"

    report = asyncio.run(run_compare(demo_pipeline(latency=0.05), SIX, concurrency=3, out=out))

    assert report.outputs_identical and report.outputs_differing == 0
    assert report.time_saved_pct is not None and report.time_saved_pct > 0
    assert report.exit_code == 0
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(data) >= REPORT_KEYS
    assert data["outputs_identical"] is True
    assert data["sequential"]["concurrency"] == 1 and data["parallel"]["concurrency"] == 3
    assert data["time_saved_pct"] == round(report.time_saved_pct, 1)
    for mode in ("sequential", "parallel"):
        assert data[mode]["items"]["succeeded"] == 6
        assert len(read_results(out / mode)) == 6
    quality = data["quality"]
    assert quality["items"] == 6 and len(quality["per_item"]) == 6
    assert quality["mean_score_difference"] == 0.0  # same texts, same scores
    row = quality["per_item"][0]
    assert row["topic"] == SIX[0]
    assert row["sequential"]["score"] == row["parallel"]["score"] > 0
    assert row["score_difference"] == 0.0


def test_times_on_a_virtual_clock_are_exact(tmp_path: Path) -> None:
    clock = VirtualClock()

    report = asyncio.run(
        clock.run(
            run_compare(demo_pipeline(latency=1.0), DEMO_TOPICS, concurrency=2, out=tmp_path, clock=clock)
        )
    )

    # each call 1 s; a topic is research, write, judge, edit (4 calls) and 2 more per revision
    calls = {r["id"]: r["attempts"] for r in read_results(tmp_path / "sequential")}
    revisions = {r["id"]: r["gates"]["write"]["revisions"] for r in read_results(tmp_path / "sequential")}
    assert revisions == {"1": 0, "2": 0, "3": 2}  # the third draft passes the judge at its third try
    assert calls == {"1": 4, "2": 4, "3": 8}
    assert report.sequential.wall_seconds == pytest.approx(16.0)
    # topics 1 and 2 together (4 s), then topic 3 (8 s)
    assert report.parallel.wall_seconds == pytest.approx(12.0)
    assert report.to_dict()["time_saved_pct"] == 25.0
    assert report.gate_outcomes_identical is True


def test_compare_at_1_and_8_in_flight_shows_identical_gate_outcomes(tmp_path: Path) -> None:
    """Jitter reorders the calls at 8 in flight; the gates still decide every item alike."""
    topics = [f"topic {i}: the history of the bicycle in city {i}" for i in range(16)]
    pipeline = demo_pipeline(latency=0.01)
    pipeline = pipeline.model_copy(update={"sim": pipeline.sim.model_copy(update={"jitter": 0.03})})
    out = tmp_path / "cmp"

    report = asyncio.run(run_compare(pipeline, topics, concurrency=8, out=out))

    assert report.gate_outcomes_identical is True and report.gated == 16
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["gate_outcomes_identical"] is True
    assert data["gates"]["items"] == 16 and data["gates"]["differing"] == 0
    sides = data["gates"]["stages"]["write"]
    assert sides["sequential"] == sides["parallel"]
    assert sides["parallel"]["revisions_per_item"] > 0  # the gates really revised some drafts
    for mode in ("sequential", "parallel"):
        tries = [len(r["gates"]["write"]["tries"]) for r in read_results(out / mode)]
        assert max(tries) > 1
    assert report.parallel.concurrency == 8


class Moody(Provider):
    """A judge whose score depends on how many verdicts it has given: order-dependent."""

    kind = "sim"

    def __init__(self) -> None:
        self.verdicts = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        await asyncio.sleep(0.001 * (len(request.prompt) % 7))
        if request.schema is None:
            return Completion(text=f"A draft of many words on {request.prompt[:40]}", input_tokens=1)
        self.verdicts += 1
        score = 9 if self.verdicts % 3 else 2
        return Completion(text=json.dumps({"score": score, "feedback": "more"}), input_tokens=1)


def test_gate_outcomes_that_depend_on_the_order_are_reported_as_differing(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(
        {
            "input": "topic",
            "stages": [
                {
                    "name": "write",
                    "prompt": "Write on {{ topic }}",
                    "gate": [{"judge": {"rubric": "good", "threshold": 5}}],
                    "on_fail": "accept",
                }
            ],
        }
    )
    topics = [f"subject {i}{'x' * i}" for i in range(9)]

    moody = {"sim": Moody()}
    report = asyncio.run(run_compare(pipeline, topics, concurrency=4, out=tmp_path, providers=moody))

    assert report.gated == 9
    assert report.gate_outcomes_identical is False and report.gates_differing > 0
    assert json.loads((tmp_path / "report.json").read_text())["gate_outcomes_identical"] is False


class Counting(Provider):
    """A real-provider stand-in (not ``sim``): temperature-0 answers a cache could keep."""

    kind = "openai"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        await asyncio.sleep(0)
        return Completion(text=f"An answer to: {request.prompt}", input_tokens=10, output_tokens=5)


def test_both_runs_really_call_the_model(tmp_path: Path) -> None:
    pipeline = Pipeline(
        model="openai:gpt-test",
        input="topic",
        stages=[Stage(name="write", prompt="W {{ topic }}"), Stage(name="edit", prompt="E {{ write }}")],
    )
    provider = Counting()

    report = asyncio.run(
        run_compare(pipeline, TOPICS, concurrency=2, out=tmp_path, providers={"openai": provider})
    )

    assert provider.calls == 2 * 2 * len(TOPICS)  # no response cache between or within the runs
    assert report.outputs_identical


def test_failed_items_show_in_both_runs(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(pipeline_data(sim={"fail_on": ["poison"]}))
    topics = ["solar power", "poison apples", "tidal power"]

    report = asyncio.run(
        run_compare(pipeline, topics, concurrency=2, out=tmp_path, max_attempts=1, retry_passes=0)
    )

    assert report.exit_code == 1
    assert report.sequential.items_failed == report.parallel.items_failed == 1
    assert report.outputs_identical  # the same item failed in both
    rows = {row["id"]: row for row in report.quality}
    assert rows["2"]["sequential"] is None and rows["2"]["score_difference"] is None
    assert report.quality_items == 2


def test_a_one_shot_iterator_is_read_for_both_runs(tmp_path: Path) -> None:
    report = asyncio.run(
        run_compare(demo_pipeline(latency=0), iter(["a topic", "another"]), concurrency=2, out=tmp_path)
    )

    assert report.sequential.items_succeeded == report.parallel.items_succeeded == 2


def test_the_demo_can_run_twice_in_one_folder(tmp_path: Path) -> None:
    asyncio.run(run_demo(tmp_path, latency=0))
    again = asyncio.run(run_demo(tmp_path, latency=0, concurrency=3))

    assert again.outputs_identical
    assert json.loads((tmp_path / "report.json").read_text())["parallel"]["concurrency"] == 3
    assert len(read_results(tmp_path / "parallel")) == len(DEMO_TOPICS)


# -- the command ---------------------------------------------------------------------------------


def test_compare_command_prints_the_comparison(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    out = tmp_path / "cmp"

    result = chainfleet("compare", write_pipeline(), "--input", topics_file(), "-c", "3", "--out", out)

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "one at a time" in text and "parallel, concurrency 3" in text
    assert text.count(" s ") >= 2  # both total times
    assert "Outputs identical between the two modes: yes" in text
    assert "Gate outcomes" not in text  # no gates in this pipeline
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["gate_outcomes_identical"] is None
    assert f"Time saved by running in parallel: {report['time_saved_pct']:.0f}%" in text
    quality = text.split("Quality of each output", 1)[1]
    for topic in TOPICS:
        assert topic[:50] in quality
    assert f"mean over {len(TOPICS)} items" in quality
    assert set(report) >= REPORT_KEYS


def test_compare_command_exit_codes(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    pipeline, topics = write_pipeline(), topics_file()

    missing = chainfleet("compare", pipeline, "-i", tmp_path / "nope.txt", "-c", "2", "-o", tmp_path / "a")
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: ") and "nope.txt" in missing.stderr

    assert chainfleet("compare", pipeline, "-i", topics, "-c", "1", "-o", tmp_path / "b").exit_code == 2

    assert chainfleet("compare", pipeline, "-i", topics, "-c", "2", "-o", tmp_path / "c", "-q").exit_code == 0
    again = chainfleet("compare", pipeline, "-i", topics, "-c", "2", "-o", tmp_path / "c", "-q")
    assert again.exit_code == 2 and "already holds a comparison" in again.stderr


def test_compare_help_shows_examples() -> None:
    result = chainfleet("compare", "--help")

    assert result.exit_code == 0
    assert "chainfleet compare examples/content.yaml --input examples/topics.txt -c 5" in result.stdout
