"""The interactive reviewer without a terminal points at the script flags instead. (The keys,
through a real pseudo-terminal: tests/e2e/test_review_terminal.py.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import chainfleet.cli.review
import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet.cli import cli
from conftest import pipeline_data


@pytest.fixture
def queued(write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path) -> Path:
    data = pipeline_data()
    data["stages"][1]["review"] = "always"
    out = tmp_path / "out"
    pipeline = write_pipeline(stages=data["stages"])
    topics = ["heat pumps", "shipping", "sleep", "bicycles"]
    result = CliRunner().invoke(
        cli, ["run", str(pipeline), "-i", str(topics_file(topics)), "-o", str(out), "-q"]
    )
    assert result.exit_code == 3, result.output
    return out


def test_without_a_terminal_it_points_at_the_script_flags(queued: Path) -> None:
    result = CliRunner().invoke(cli, ["review", str(queued)])
    assert result.exit_code == 2
    assert "not a terminal: use --list, --approve" in result.output
