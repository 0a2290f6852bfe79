"""``chainfleet exec`` refuses bad input before anything runs: one line, exit 2, no command
started and no model called (the sim-server counts nothing)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainfleet.sim.server import SimServerSettings, SimServerThread
from exec_cli import KEY, chainfleet


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0)) as server:
        yield server


def refused(sim: SimServerThread, tmp_path: Path, *args: str) -> str:
    """Run ``chainfleet exec ARGS``; assert it refused (exit 2, one line, nothing ran)."""
    marker = tmp_path / "ran"
    proc = chainfleet(sim, "exec", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert not marker.exists()
    assert sim.stats()["calls"] == 0
    return lines[0]


@pytest.fixture
def topics(tmp_path: Path) -> Path:
    path = tmp_path / "topics.txt"
    path.write_text("solar power\nwind\n")
    return path


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"topic": "solar", "audience": "kids"}\n{"topic": "wind", "audience": "adults"}\n')
    return path


def test_a_command_not_on_path(sim: SimServerThread, tmp_path: Path, topics: Path) -> None:
    line = refused(sim, tmp_path, "-i", str(topics), "--", "no-such-chain-xyz", "{topic}")

    assert line == "error: command not found: 'no-such-chain-xyz' (not on PATH)"


def test_a_path_that_is_not_there(sim: SimServerThread, tmp_path: Path, topics: Path) -> None:
    line = refused(sim, tmp_path, "-i", str(topics), "--", "./my_chain.sh", "{topic}")

    assert line == "error: command not found: './my_chain.sh' (no such file)"


def test_no_command(sim: SimServerThread, tmp_path: Path, topics: Path) -> None:
    line = refused(sim, tmp_path, "-i", str(topics))

    assert line.startswith("error: no command given: put it after --")


def test_a_placeholder_naming_no_field_says_did_you_mean(
    sim: SimServerThread, tmp_path: Path, rows: Path
) -> None:
    args = ["-i", str(rows), "--", "touch", str(tmp_path / "ran"), "{topic}", "{audiense}"]

    line = refused(sim, tmp_path, *args)

    assert line == (
        f"error: {rows}:1: placeholder {{audiense}} names no field of the input "
        "(did you mean {audience}?); the fields are {audience}, {id}, {topic}"
    )


def test_a_later_item_without_the_field_is_named(sim: SimServerThread, tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "solar"}\n{"title": "wind"}\n')

    line = refused(sim, tmp_path, "-i", str(rows), "--", "touch", str(tmp_path / "ran"), "{topic}")

    assert line.startswith(f"error: {rows}:2: missing field 'topic'")


def test_the_output_file_pattern_is_checked_too(sim: SimServerThread, tmp_path: Path, topics: Path) -> None:
    args = [
        "-i",
        str(topics),
        "--output-file",
        "out/{slug}.md",
        "--",
        "touch",
        str(tmp_path / "ran"),
        "{topic}",
    ]

    line = refused(sim, tmp_path, *args)

    assert "placeholder {slug} names no field of the input" in line


def test_a_text_file_gives_one_field(sim: SimServerThread, tmp_path: Path, topics: Path) -> None:
    line = refused(
        sim, tmp_path, "-i", str(topics), "--", "touch", str(tmp_path / "ran"), "{topic}", "{tone}"
    )

    assert line == (
        f"error: {topics}: placeholder {{tone}} names no field of the input; the fields are {{id}}, "
        "{topic}; a text file's line is the one field {topic}: use CSV or JSONL for more"
    )


def test_the_help_shows_how(sim: SimServerThread, tmp_path: Path) -> None:
    proc = chainfleet(sim, "exec", "--help", cwd=tmp_path)

    assert proc.returncode == 0
    assert 'chainfleet exec -i topics.txt -c 5 -- python my_chain.py "{topic}"' in proc.stdout


def test_the_command_keeps_its_own_options(sim: SimServerThread, tmp_path: Path, topics: Path) -> None:
    """Options after the program belong to it, not to chainfleet (-c here is the program's)."""
    proc = chainfleet(sim, "exec", "-i", str(topics), "--", "nope-xyz", "-c", "--timeout", cwd=tmp_path)

    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: command not found: 'nope-xyz' (not on PATH)"
    assert isinstance(proc, subprocess.CompletedProcess)
