"""A base URL where nothing listens stops the run at once; a misspelt model is warned about and
left unpriced (issue 23, parts 3 and 4). In-process CLI runs (CliRunner) against a closed port
and the sim-server."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet.cli import cli
from chainfleet.sim.server import SimServerSettings, SimServerThread
from conftest import read_report

KEY = "sk-test-endpoints"
PIPELINE = (
    "model: openai:gpt-4o-mini\ninput: topic\n"
    "stages:\n  - {name: a, prompt: 'A {{ topic }}', max_tokens: 30}\n"
)


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(tmp_path: Path, pipeline: str, items: int, *args: str) -> Result:
    (tmp_path / "p.yaml").write_text(pipeline, encoding="utf-8")
    (tmp_path / "t.txt").write_text("".join(f"topic {i}\n" for i in range(items)), encoding="utf-8")
    p, t, out = (str(tmp_path / name) for name in ("p.yaml", "t.txt", "out"))
    return CliRunner().invoke(cli, ["run", p, "-i", t, "--out", out, "-q", *args])


def test_a_dead_base_url_stops_the_run_within_the_threshold_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    done = run(tmp_path, PIPELINE, 50, "-c", "5")
    assert done.exit_code == 2, done.output
    stopped = [line for line in done.output.splitlines() if line.startswith("error: the run stopped")]
    assert len(stopped) == 1, done.output
    assert url in stopped[0] and "connections in a row failed" in stopped[0]
    assert f"chainfleet resume {tmp_path / 'out'}" in stopped[0]
    assert "Traceback" not in done.output and KEY not in done.output
    with sqlite3.connect(tmp_path / "out" / "run.db") as db:
        attempts = db.execute("select count(*) from calls").fetchone()[0]
    # 10 failures in a row stop admission; the 4 other chains in flight end at their next attempt
    # (was: 50 items x 4 attempts x 2 passes = 400 attempts over 78 s)
    assert 10 <= attempts <= 15, attempts
    report = read_report(tmp_path / "out")
    assert report["stopped_kind"] == "endpoint_down" and url in report["stopped"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServerThread]:
    server = SimServerThread(SimServerSettings(api_keys=(KEY,)))
    server.start()
    yield server
    server.stop()


def test_a_misspelt_model_is_warned_about_and_not_priced_as_its_neighbour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: SimServerThread
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{sim.url}/v1")
    done = run(tmp_path, PIPELINE, 3, "--model", "openai:gpt-4o-mni")
    assert done.exit_code == 0, done.output
    warning = [line for line in done.output.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, done.output
    assert "'openai:gpt-4o-mni'" in warning[0] and "did you mean 'gpt-4o-mini'?" in warning[0]
    assert read_report(tmp_path / "out")["cost_usd"] is None  # unknown, never gpt-4o's $2.50/M
