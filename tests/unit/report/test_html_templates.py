"""report.html's template is compiled once and kept in the user's cache folder: a second run
renders the same page from it, and a cache folder that cannot be made or written changes
nothing but the time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chainfleet.report import html
from chainfleet.report.html import report_html

REPORT = {
    "run_id": "r1",
    "pipeline": "content",
    "concurrency": 2,
    "items": {"total": 1, "succeeded": 1, "failed": 0, "skipped": 0},
    "wall_seconds": 1.0,
    "sequential_seconds": 1.0,
    "calls": {"total": 1, "succeeded": 1, "retried": 0, "rate_limited": 0, "failed": 0},
    "tokens": {"input": 1, "output": 2},
    "stages": {"write": {"calls": 1, "failed": 0, "p50_seconds": 1.0}},
    "failures": [],
}


@pytest.fixture(autouse=True)
def fresh_environment() -> Iterator[None]:
    html._environment.cache_clear()
    yield
    html._environment.cache_clear()


def test_a_second_render_uses_the_compiled_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = report_html(REPORT)
    kept = list((tmp_path / "chainfleet" / "jinja2").iterdir())
    html._environment.cache_clear()

    second = report_html(REPORT)

    assert kept and second == first
    assert "Run r1: content" in second


def test_a_cache_folder_that_cannot_be_made_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))

    assert "Run r1: content" in report_html(REPORT)
