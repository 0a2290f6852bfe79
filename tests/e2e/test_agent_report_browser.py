"""report.html's trajectory view in a real headless browser (Debian's chromium, driven by
Playwright): the first item's conversation is open and readable, another opens with a click (no
script in the page), and a tool's ``<script>`` result shows as text and never runs. Without
chromium or playwright this skips, except when ``CI`` is set: there it fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from unit.report.test_agent_view import agent_run

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser test cannot run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("agentbrowser")
    agent_run(folder)  # before the browser: Playwright's sync API holds the event loop
    return folder


@pytest.fixture(scope="module")
def browser(out: Path) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[browser]')")
    if not Path(CHROMIUM).exists():
        _missing(f"no {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield launched
        launched.close()


def test_the_trajectory_view_reads_as_a_conversation_in_a_browser(out: Path, browser: Any) -> None:
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto((out / "report.html").resolve().as_uri())
    blocks = page.locator("details.trajectory")
    assert blocks.count() == 6
    first, second = blocks.nth(0), blocks.nth(1)
    assert first.locator(".msg.answer").is_visible()
    assert first.locator(".msg.system").inner_text().endswith("You research <carefully>.")
    assert "calls broken" in first.inner_text() or "calls fetch" in first.inner_text()
    assert not second.locator(".msg.answer").is_visible()  # closed until clicked
    second.locator("summary").click()
    assert second.locator(".msg.answer").is_visible()
    fetched = page.locator(".msg.tool", has_text="result of fetch").first
    assert '<script>alert("pwned")</script>' in fetched.inner_text()  # shown as text
    assert dialogs == []  # and never run
    assert page.locator("script").count() == 0
    page.close()
