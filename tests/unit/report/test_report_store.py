"""The report without the Runner (issue 11, item 5): report.json, report.md and report.html are
built from the run store alone, the report modules import nothing of the runner (no import
circle), the HTML comes from a Jinja2 template shipped with the package (autoescaped, with
thousands separators), and `chainfleet report OUT` rebuilds every file from run.db."""

from __future__ import annotations

import functools
import importlib.resources
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import grimp
from click.testing import CliRunner

import chainfleet.cli.report  # noqa: F401 - registers the commands
from chainfleet import Pipeline, run
from chainfleet.cli import cli
from chainfleet.report.build import build_report
from chainfleet.report.html import report_html
from chainfleet.store.runstore import ItemRecord, RunStore
from conftest import TOPICS, pipeline_data

REPORT_MODULES = ("report.model", "report.build", "report.output", "report.markdown", "report.html")


@functools.cache
def graph() -> grimp.ImportGraph:
    """chainfleet's import graph: every import, at the top, in functions, under TYPE_CHECKING."""
    return grimp.build_graph("chainfleet", cache_dir=None)


def imports_of(module: str) -> set[str]:
    """The chainfleet modules ``module`` (``"cli.run"``) imports, and the packages whose
    ``__init__`` that import runs."""
    found = set()
    for target in graph().find_modules_directly_imported_by(f"chainfleet.{module}"):
        parts = target.split(".")[1:]
        found.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return found


def reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(imports_of(module))
    return seen


def test_the_report_modules_never_import_the_runner() -> None:
    for module in REPORT_MODULES:
        reached = reachable(module)
        assert not {"runner", "chain", "backends"} & reached, (module, sorted(reached))
    assert "report.output" not in reachable("report.model")  # the old circle: runner -> output -> report


def test_the_import_walker_sees_an_import_when_there_is_one() -> None:
    assert "report.build" in imports_of("runner.core") and "store.runstore" in imports_of("report.build")
    assert "runner" in reachable("cli.run")


def test_the_html_template_is_package_data() -> None:
    templates = importlib.resources.files("chainfleet.report") / "templates"
    assert (templates / "report.html").is_file() and (templates / "report.css").is_file()


class Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page_text(page: str) -> tuple[str, set[str]]:
    parser = Text()
    parser.feed(page)
    return "".join(parser.text), parser.tags


def big_summary() -> dict[str, Any]:
    return {
        "run_id": "r1",
        "pipeline": "<b>content</b>",
        "concurrency": 500,
        "items": {"total": 1_250_000, "succeeded": 1_249_000, "failed": 1_000, "skipped": 0},
        "wall_seconds": 3600.0,
        "sequential_seconds": 360000.0,
        "speedup": 100.0,
        "time_saved_pct": 99.0,
        "calls": {"total": 1_300_000, "succeeded": 1_249_000, "retried": 51_000, "rate_limited": 12_345},
        "tokens": {"input": 10, "output": 20},
        "cost_usd": 1234.5,
        "stages": {"w": {"calls": 1_300_000, "failed": 51_000, "p50_seconds": 1.0}},
        "failures": [{"id": "7", "stage": "w", "type": "server_error", "message": "<script>x</script>"}],
        "rates": {"achieved_rpm": 20816.7, "achieved_tpm": 0.5, "attempts_rpm": 21666.7},
    }


def test_the_html_has_thousands_separators_and_escapes_what_data_holds() -> None:
    records = (ItemRecord(index=i, id=str(i), input={"topic": "t"}, status="succeeded") for i in range(300))
    page = report_html(big_summary(), items=records, input_field="topic")
    text, tags = page_text(page)

    assert "1,249,000 / 1,250,000" in text
    assert "1,300,000 calls: 1,249,000 succeeded, 51,000 retried, 12,345 rate-limited" in text
    assert "20,817 successful requests/min (attempts: 21,667/min)" in text
    assert "$1,234.5000" in text
    assert "1,249,800 more in results.jsonl." in text
    assert "999 more in results.jsonl." in text  # failures: 1,000, one listed
    assert "<script>x</script>" in text and "script" not in tags and "b" not in tags


def finished_run(folder: Path) -> Path:
    stage = {"name": "edit", "prompt": "Edit: {{ write }}", "gate": [{"min_words": 3}]}
    data = pipeline_data(sim={"fail_on": ["poison"]}, limits={"sim": {"rpm": 100000}})
    data["stages"] = [*data["stages"][:2], stage]
    pipeline = Pipeline.from_dict(data, source="test")
    run(pipeline, [*TOPICS, "poison ivy"], out=folder, concurrency=3, max_attempts=1, retry_passes=0)
    return folder


def test_chainfleet_report_rebuilds_every_file_from_the_store_alone(tmp_path: Path) -> None:
    out = finished_run(tmp_path / "out")
    names = ("report.json", "report.md", "results.jsonl")
    before = {name: (out / name).read_bytes() for name in names}
    items = sorted(p.name for p in (out / "items").iterdir())
    for name in (*names, "report.html", "timeline.png"):
        (out / name).unlink()
    shutil.rmtree(out / "items")

    result = CliRunner().invoke(cli, ["report", str(out)], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    assert {name: (out / name).read_bytes() for name in names} == before
    assert sorted(p.name for p in (out / "items").iterdir()) == items
    assert (out / "report.html").is_file() and (out / "timeline.png").is_file()


def test_sections_other_features_add_keep_appearing(tmp_path: Path) -> None:
    out = finished_run(tmp_path / "out")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    md = (out / "report.md").read_text(encoding="utf-8")
    html_text, _ = page_text((out / "report.html").read_text(encoding="utf-8"))

    assert report["gates"]["stages"]["edit"]["items"] == 5
    assert "## Gates" in md and "| edit | min_words |" in md
    raw = (out / "report.html").read_text(encoding="utf-8")
    assert "Gates and contracts" in html_text and "min_words" in html_text
    assert '<td>edit</td><td class="num">5</td>' in raw  # edit: 5 items gated
    assert "sim: limits 100,000 requests/min" in md
    assert "100,000" in html_text


def test_a_report_is_the_same_built_in_the_run_or_later_from_the_store(tmp_path: Path) -> None:
    out = finished_run(tmp_path / "out")
    with RunStore.open(out / "run.db") as store:
        (found,) = store.runs()
        rebuilt = build_report(store, found["run_id"])
        assert rebuilt.to_dict() == json.loads((out / "report.json").read_text(encoding="utf-8"))
        assert rebuilt.to_markdown() == (out / "report.md").read_text(encoding="utf-8")
