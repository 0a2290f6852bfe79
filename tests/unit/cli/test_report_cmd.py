"""``chainfleet report`` renders a run's folder again from its store alone; ``chainfleet runs``
lists the runs under a folder; both say what is wrong in one line and exit 2."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import chainfleet.cli.report  # noqa: F401 - registers the commands
from chainfleet import Pipeline, run
from chainfleet.cli import cli
from chainfleet.report.output import stored_report
from chainfleet.store.runstore import RunStore
from conftest import TOPICS, pipeline_data, read_report, read_results

RENDERED = ("report.md", "report.html", "timeline.png")


def chainfleet(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def the_error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A finished run's folder: 5 topics and one poisoned, on sim at latency 0."""
    folder = tmp_path / "runs" / "first"
    pipeline = Pipeline.from_dict(pipeline_data(sim={"fail_on": ["poison"]}), source="test")
    run(pipeline, [*TOPICS, "poison ivy"], out=folder, concurrency=3, max_attempts=1, retry_passes=0)
    return folder


def without_image(page: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:...", page)


def test_report_renders_the_folder_again_with_the_same_numbers(out: Path) -> None:
    before = {name: (out / name).read_text(encoding="utf-8") for name in ("report.md", "report.html")}
    results = (out / "results.jsonl").read_text(encoding="utf-8")
    report_json = (out / "report.json").read_bytes()
    for name in (*RENDERED, "results.jsonl"):
        (out / name).unlink()

    result = chainfleet("report", out)

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "5/6 items succeeded, 1 failed" in result.stdout
    assert (out / "report.md").read_text(encoding="utf-8") == before["report.md"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert without_image(html) == without_image(before["report.html"])
    assert (out / "timeline.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "results.jsonl").read_text(encoding="utf-8") == results
    assert (out / "report.json").read_bytes() == report_json  # the saved numbers, left alone
    assert not list(out.glob("*.tmp"))


def test_report_writes_report_json_when_it_is_missing(out: Path) -> None:
    saved = read_report(out)
    (out / "report.json").unlink()

    assert chainfleet("report", out).exit_code == 0

    assert read_report(out) == saved


def test_the_saved_summary_gives_the_report_back(out: Path) -> None:
    with RunStore.open(out / "run.db") as store:
        (found,) = store.runs()
        # the runner keeps report.to_dict() as the run's summary when the run ends
        summary = found["summary"]
        assert summary == read_report(out)

        rebuilt = stored_report(store, found)  # what `chainfleet report` renders

        assert rebuilt.to_dict() == summary
        assert rebuilt.stages_order == ["research", "write", "edit"]  # JSON sorted the keys
        assert [r.id for r in rebuilt.results()] == [r["id"] for r in read_results(out)]


def test_a_run_that_saved_no_report_is_rebuilt_from_its_calls(out: Path) -> None:
    saved = read_report(out)
    with RunStore.open(out / "run.db") as store:  # as if killed before it ended
        (found,) = store.runs()
        store.end_run(found["run_id"], status="running", summary={})

    result = chainfleet("report", out)

    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "5 of 6 succeeded" in md
    assert "saved no report" in md
    assert "| 6 | research | server_error |" in md
    calls = re.search(r"- Calls: (\d+) \((\d+) succeeded", md)
    assert calls is not None
    assert int(calls[1]) == saved["calls"]["total"] and int(calls[2]) == saved["calls"]["succeeded"]
    quality = md.split("## Quality of each output", 1)[1]
    rows = [line for line in quality.splitlines() if line.startswith("| ") and not line.startswith("| item")]
    assert len(rows) == 5


def test_report_picks_a_run_by_id(out: Path, tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(pipeline_data(sim={"fail_on": ["poison"]}), source="test")
    # a second run in the same store (a resume without a run id goes on with the same run, as
    # a new session of it): reusing the first run's results, it calls only what failed
    run(
        pipeline,
        [*TOPICS, "poison ivy"],
        out=out,
        max_attempts=1,
        retry_passes=0,
        resume=True,
        run_id="second",
    )
    with RunStore.open(out / "run.db") as store:
        first, second = (r["run_id"] for r in store.runs())

    assert chainfleet("report", out).exit_code == 0
    assert read_report(out)["run_id"] == second
    assert second in (out / "report.md").read_text(encoding="utf-8")

    assert chainfleet("report", out, "--run", first).exit_code == 0
    assert first in (out / "report.md").read_text(encoding="utf-8")
    assert read_report(out)["run_id"] == first  # report.json follows the run rendered


def test_runs_lists_the_runs_under_a_folder(out: Path) -> None:
    run_id = read_report(out)["run_id"]

    result = chainfleet("runs", out.parent)

    assert result.exit_code == 0, result.output
    header, line = result.stdout.strip().splitlines()
    assert header.split()[:4] == ["run", "pipeline", "started", "status"]
    cells = line.split()
    assert cells[0] == run_id and cells[1] == "content"
    assert "done" in cells
    assert re.search(r"done\s+5\s+1\s+0\s+", line), line
    assert str(out) in line


def test_runs_also_reads_the_folder_itself(out: Path) -> None:
    result = chainfleet("runs", out)

    assert result.exit_code == 0, result.output
    assert read_report(out)["run_id"] in result.stdout


def test_runs_defaults_to_the_runs_folder(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(out.parent.parent)

    result = chainfleet("runs")

    assert result.exit_code == 0, result.output
    assert read_report(out)["run_id"] in result.stdout


def test_runs_skips_a_store_that_is_not_ours(out: Path) -> None:
    other = out.parent / "other"
    other.mkdir()
    (other / "run.db").write_text("not a database at all", encoding="utf-8")

    result = chainfleet("runs", out.parent)

    assert result.exit_code == 0, result.output
    assert read_report(out)["run_id"] in result.stdout
    assert "skipped" in result.stderr and "other" in result.stderr


def test_runs_of_an_empty_folder(tmp_path: Path) -> None:
    result = chainfleet("runs", tmp_path)

    assert result.exit_code == 0
    assert "no runs" in result.stdout


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    assert "no such folder" in the_error_line(chainfleet("report", tmp_path / "missing"))
    assert "no such folder" in the_error_line(chainfleet("runs", tmp_path / "missing"))
    assert "run.db not found" in the_error_line(chainfleet("report", tmp_path))
    assert not (tmp_path / "run.db").exists()  # looking did not create a store

    (tmp_path / "run.db").write_text("not a database at all", encoding="utf-8")
    assert "not a chainfleet run store" in the_error_line(chainfleet("report", tmp_path))
    assert "not a chainfleet run store" in the_error_line(chainfleet("runs", tmp_path))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / "run.db") as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()
    assert "not a chainfleet run store" in the_error_line(chainfleet("report", foreign))
    assert not (foreign / "report.md").exists()


def test_unknown_run_id_is_an_error(out: Path) -> None:
    line = the_error_line(chainfleet("report", out, "--run", "nope"))

    assert "no run 'nope'" in line
    assert read_report(out)["run_id"] in line  # names the runs there


def test_an_empty_store_is_an_error(tmp_path: Path) -> None:
    RunStore.open(tmp_path / "run.db").close()

    assert "holds no run" in the_error_line(chainfleet("report", tmp_path))


def test_report_json_of_the_run_is_valid_json_after_a_rewrite(out: Path) -> None:
    assert chainfleet("report", out).exit_code == 0

    json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert len(read_results(out)) == 6


def test_runs_shows_no_time_saved_for_a_run_made_one_at_a_time(tmp_path: Path) -> None:
    # it showed "-0%": a one-at-a-time run measured against its own estimate, a rounding away from 0
    folder = tmp_path / "runs" / "one"
    run(Pipeline.from_dict(pipeline_data(), source="test"), TOPICS, out=folder, concurrency=1)

    result = chainfleet("runs", folder.parent)

    assert result.exit_code == 0, result.output
    header, line = result.stdout.strip().splitlines()
    assert header.split()[-2:] == ["saved", "folder"]
    assert line.split()[-2] == "-", line
    assert "%" not in line
