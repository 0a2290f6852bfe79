"""Smaller truths (issue 11, item 7), each as a user meets it:

- ``-c auto``'s closing summary gives the peak reached, not the cap;
- ``chainfleet runs`` lists the two runs of a comparison;
- a run slower than one at a time says "0.40x: slower than one at a time", never a negative %;
- ``.gitignore`` covers the default output folders;
- a ``{{ topic }}`` that a text file does not provide suggests ``input: topic``.

(The stop message and a tool module beside the pipeline, in real processes:
tests/e2e/test_validation_truths.py.)"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

import chainfleet.cli.compare
import chainfleet.cli.demo
import chainfleet.cli.report
import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet.cli import cli
from chainfleet.pipeline import Pipeline
from chainfleet.report.model import RunReport
from chainfleet.runner.api import arun

ROOT = Path(__file__).resolve().parents[3]


def chainfleet(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_auto_concurrency_summary_gives_the_peak_not_the_cap(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(
        {
            "name": "p",
            "model": "sim",
            "sim": {"latency": 0.02},
            "stages": [{"name": "a", "prompt": "Write on {{ input }}"}],
        }
    )
    report = asyncio.run(arun(pipeline, [f"t{i}" for i in range(6)], concurrency="auto", out=tmp_path / "o"))
    line = report.summary_lines()[1]
    found = re.search(r"concurrency auto \(peak (\d+) in flight, cap 64\)", line)
    assert found, line
    assert 1 <= int(found.group(1)) <= 6  # six items: never more than six at once


def test_runs_lists_both_runs_of_a_comparison(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    root = tmp_path / "runs"
    result = chainfleet(
        "compare", write_pipeline(), "-i", topics_file(), "-c", "2", "--out", root / "compare-1"
    )
    assert result.exit_code == 0, result.output

    listed = chainfleet("runs", root)

    assert listed.exit_code == 0, listed.output
    assert "compare-1/sequential" in listed.stdout and "compare-1/parallel" in listed.stdout


def test_a_run_slower_than_one_at_a_time_says_so() -> None:
    report = RunReport(
        run_id="r", pipeline="p", concurrency=4, stages_order=["a"], wall_seconds=10.0, sequential_seconds=4.0
    )
    line = report.summary_lines()[1]
    assert "0.40x: slower than one at a time" in line
    assert "%" not in line
    markdown = report.to_markdown()
    assert "0.40x: slower than one at a time" in markdown and "-150" not in markdown


def test_gitignore_covers_the_default_output_folders() -> None:
    ignored = {
        line.strip().strip("/") for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    }
    demo = next(c for c in cli.commands.values() if c.name == "demo")
    demo_out = next(p.default for p in demo.params if p.name == "out")
    assert {"runs", str(demo_out)} <= ignored  # run and compare write under runs/ by default


def test_a_missing_topic_on_a_text_file_suggests_naming_the_input(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text('name: p\nmodel: sim\nstages:\n  - name: a\n    prompt: "Write about {{ topic }}"\n')
    topics = tmp_path / "t.txt"
    topics.write_text("tea\n", encoding="utf-8")

    result = chainfleet("run", pipeline, "-i", topics, "-o", tmp_path / "o")

    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "each line of a text file becomes the field 'input'" in line
    assert "add `input: topic` to the pipeline" in line
