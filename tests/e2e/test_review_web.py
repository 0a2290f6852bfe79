"""The review web page in a real headless browser (Debian's chromium, driven by Playwright).

The server is the real command, ``chainfleet review OUT --web``, in a subprocess: the test
reads the URL it prints, then clicks and types like a reviewer and checks run.db. Without
chromium or playwright these tests skip, except when ``CI`` is set: there they fail.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import pipeline_data

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOPICS = ["heat pumps", "<script>alert('x')</script> in a topic", "sleep and memory", "bicycles"]
#: this checkout's sources (not an installed chainfleet), and tests/ for the gate's module
PYTHONPATH = os.pathsep.join([str(Path(__file__).parents[2] / "src"), str(Path(__file__).parents[1])])
#: where the README's screenshot goes when this is set (``CHAINFLEET_SCREENSHOT=docs/review-web.png``)
SCREENSHOT = os.environ.get("CHAINFLEET_SCREENSHOT")


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser test cannot run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
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


@pytest.fixture
def queued(write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path) -> Path:
    """Four items waiting at `write`, whose gate refuses "lorem" (so an edit can break it)."""
    data = pipeline_data()
    data["stages"][1] |= {"review": "always", "gate": "review_gates:no_lorem"}
    out = tmp_path / "out"
    pipeline = write_pipeline(stages=data["stages"])
    # a subprocess: Playwright's sync API holds this process's event loop
    args = [CHAINFLEET, "run", str(pipeline), "-i", str(topics_file(TOPICS)), "-o", str(out), "-q"]
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    return out


@pytest.fixture
def server(queued: Path) -> Iterator[str]:
    """``chainfleet review OUT --web`` running; yields the URL it printed."""
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    proc = subprocess.Popen(
        [CHAINFLEET, "review", str(queued), "--web", "--reviewer", "webby"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server is listening
    try:
        assert line.startswith("review page: http://127.0.0.1:"), line
        yield line.split(": ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def decisions(out: Path) -> list[tuple[str, str, str, str | None, str | None, str | None]]:
    with sqlite3.connect(out / "run.db") as db:
        return db.execute(
            "SELECT item_id, action, reviewer, note, from_stage, after FROM review_decisions "
            "WHERE undone IS NULL ORDER BY did"
        ).fetchall()


def status(url: str, data: bytes | None = None) -> int:
    """The status after redirects, keeping cookies like a browser (a fresh jar each call)."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    try:
        with opener.open(urllib.request.Request(url, data=data), timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_request_needs_the_token_and_the_server_is_on_loopback_only(server: str, queued: Path) -> None:
    base, token = server.split("/?token=")
    assert status(server) == 200
    wrong_last = "y" if token.endswith("x") else "x"  # one character off, never the token itself
    for path in ("/", "/item/1", "/?token=", f"/?token={token[:-1]}{wrong_last}", "/item/1?token=nope"):
        assert status(base + path) == 403, path
    assert status(base + "/item/1", data=b"action=approve") == 403
    assert status(base + "/bulk?token=wrong", data=b"qid=1&qid=2") == 403
    assert decisions(queued) == []  # nothing decided without the token
    port = int(base.rsplit(":", 1)[1])
    tcp = Path("/proc/net/tcp")
    if tcp.exists():  # the listening socket's local address is 127.0.0.1, not 0.0.0.0
        listening = [line.split()[1] for line in tcp.read_text().splitlines()[1:] if line.split()[3] == "0A"]
        ours = [address for address in listening if int(address.split(":")[1], 16) == port]
        assert ours == ["0100007F:" + f"{port:04X}"]


def test_approve_edit_reject_and_bulk_approve_in_the_browser(browser: Any, server: str, queued: Path) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 880})
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(server)
    assert page.url == server.split("?token=")[0]  # the token went to a cookie, out of the URL
    assert page.locator("strong").first.inner_text() == "4 waiting for review."
    assert "<script>alert('x')</script> in a topic" in page.inner_text("table")  # shown as text
    page.keyboard.press("Enter")  # opens the first item
    page.wait_for_selector("#approve")
    page.keyboard.press("a")  # approve by its key
    page.wait_for_selector("#message")
    assert page.inner_text("#message") == "approved 1"
    page.keyboard.press("u")  # undo it: item 1 waits again, then approve it again
    page.wait_for_selector("text=undone: 1 waits again")
    assert "item 1" in page.inner_text("h2").lower()
    page.click("#approve")
    assert page.inner_text("#message") == "approved 1"
    page.fill("#after", "Lorem ipsum draft")  # the gate refuses it: shown, kept, nothing stored
    page.click("#save-edit")
    assert "says lorem ipsum" in page.inner_text("#problem")
    assert page.input_value("#after") == "Lorem ipsum draft"
    assert "<script>alert('x')</script>" in page.inner_text("#input")
    page.fill("#after", "A careful article on scripts in topics.")
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT)
    page.click("#save-edit")
    assert page.inner_text("#message") == "edited 2"
    page.fill("#note", "Add a figure for memory consolidation.")
    page.select_option("#from-stage", "research")
    page.click("#reject")
    assert page.inner_text("#message") == "rejected 3"
    page.goto(server)
    page.check("#all")
    page.click("#approve-selected")
    assert page.inner_text("#message") == "approved 1"
    assert page.is_visible("#empty")
    assert dialogs == []  # no script of an item ever ran
    assert [text for text in console if "Content Security Policy" in text] == []  # the page's own ran
    with sqlite3.connect(queued / "run.db") as db:
        assert db.execute(
            "SELECT item_id, action FROM review_decisions WHERE undone IS NOT NULL"
        ).fetchall() == [("1", "approve")]
    assert decisions(queued) == [
        ("1", "approve", "webby", None, None, None),
        ("2", "edit", "webby", None, None, "A careful article on scripts in topics."),
        ("3", "reject", "webby", "Add a figure for memory consolidation.", "research", None),
        ("4", "approve", "webby", None, None, None),
    ]
    page.close()


def test_two_browser_sessions_deciding_one_item(browser: Any, server: str, queued: Path) -> None:
    pages = []
    for name in ("alice", "bob"):
        context = browser.new_context()
        page = context.new_page()
        page.goto(server)
        page.fill("#reviewer", name)
        page.dispatch_event("#reviewer", "change")
        page.click("a.open")  # both open item 1
        page.wait_for_selector("#approve")
        pages.append(page)
    pages[0].click("#approve")
    assert pages[0].inner_text("#message") == "approved 1"
    pages[1].fill("#note", "too long")
    pages[1].click("#reject")  # a stale page
    assert "already decided by alice at" in pages[1].inner_text("#problem")
    assert decisions(queued) == [("1", "approve", "alice", None, None, None)]
    for page in pages:
        page.context.close()
