"""The execution seam without Ray, in-process: the Ray-only flags are refused with exit code 2
on the local backend, and an unknown backend is a usage error. (That ``--help`` and a local run
never import Ray is checked in a fresh interpreter: tests/e2e/test_backends.py.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet.cli import cli


def test_ray_flags_without_the_ray_backend_exit_2_before_any_call(
    write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["run", str(write_pipeline()), "-i", str(topics_file()), "--workers", "3", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "--workers only apply with --backend ray" in result.output
    assert not (out / "results.jsonl").exists()


def test_an_unknown_backend_is_a_usage_error(
    write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    args = ["run", str(write_pipeline()), "-i", str(topics_file()), "--backend", "k8s"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "k8s" in result.output
