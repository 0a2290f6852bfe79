"""The interactive reviewer without a terminal points at the script flags instead. (The keys,
through a real pseudo-terminal: tests/e2e/test_review_terminal.py.)"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import chainfleet.cli.review
import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet.cli import cli


def test_without_a_terminal_it_points_at_the_script_flags(four_waiting: Path) -> None:
    result = CliRunner().invoke(cli, ["review", str(four_waiting)])
    assert result.exit_code == 2
    assert "not a terminal: use --list, --approve" in result.output
