"""A route in batch mode (``--batch`` or ``mode: batch``) is refused before any call: a batch job
goes to one provider's batch API, where a route's policy and its report counts cannot hold (the
batch used to go to the route's first target, unreported)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet.cli import cli

PIPELINE = """\
model: fast
input: topic
{mode}routes:
  fast:
    targets: [sim:one, sim:two]
stages:
  - {{name: a, prompt: 'A {{{{ topic }}}}', max_tokens: 20}}
  - {{name: b, model: sim:three, prompt: 'B {{{{ a }}}}', max_tokens: 20}}
"""


@pytest.mark.parametrize(("mode", "flag"), [("mode: batch\n", []), ("", ["--batch"])], ids=["mode", "flag"])
def test_a_route_in_batch_mode_is_one_line_and_exit_2_before_any_call(
    tmp_path: Path, mode: str, flag: list[str]
) -> None:
    (tmp_path / "p.yaml").write_text(PIPELINE.format(mode=mode), encoding="utf-8")
    (tmp_path / "t.txt").write_text("one\ntwo\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "t.txt"), "--out", str(out), *flag]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2, done.output
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "stage 'a' (stages[0])" in lines[0] and "route 'fast'" in lines[0]
    assert "e.g. sim:one" in lines[0]
    assert not out.exists()  # nothing ran: no store, no report
