"""Issue 22: with 5,000 waiting items the review page was one 1.5 MB page (and each approval
re-read the whole queue). The page and ``review --list`` show the queue 200 items at a time,
with the way to the next and previous pages. A run of 450 items that all wait for review, its
page served on 127.0.0.1 in a thread of this process (so the worktree's code runs)."""

from __future__ import annotations

import asyncio
import http.client
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

import chainfleet.cli.review
import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet.cli import cli
from chainfleet.review.session import ReviewSession
from chainfleet.review.web import make_app

TOKEN = "t0ken-for-pages"
ITEMS = 450


@pytest.fixture(scope="module")
def waiting(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pages")
    (folder / "p.yaml").write_text(
        "name: t\nmodel: sim\nsim: {latency: 0}\ninput: topic\n"
        "stages:\n  - {name: a, prompt: 'A {{ topic }}', max_tokens: 20, review: always}\n",
        encoding="utf-8",
    )
    (folder / "t.txt").write_text("".join(f"topic {i}\n" for i in range(ITEMS)), encoding="utf-8")
    args = ["run", str(folder / "p.yaml"), "-i", str(folder / "t.txt"), "-o", str(folder / "out"), "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    return folder / "out"


@pytest.fixture(scope="module")
def port(waiting: Path) -> Iterator[int]:
    started: queue.Queue[tuple[int, asyncio.AbstractEventLoop, asyncio.Event] | BaseException] = queue.Queue()

    async def serve() -> None:
        with ReviewSession.open(waiting, reviewer="pager") as session:
            runner = web.AppRunner(make_app(session, TOKEN))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            stop = asyncio.Event()
            started.put((runner.addresses[0][1], asyncio.get_running_loop(), stop))
            try:
                await stop.wait()
            finally:
                await runner.cleanup()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            started.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    got = started.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    number, loop, stop = got
    yield number
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=60)


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": f"127.0.0.1:{port}", "Cookie": f"chainfleet-review-{port}={TOKEN}"}
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        conn.close()


def rows(html: str) -> list[str]:
    return re.findall(r'<a href="/item/\d+" class="open">([^<]+)</a>', html)


def test_the_review_page_shows_the_queue_200_items_at_a_time(port: int) -> None:
    status, first = get(port, "/")
    assert status == 200
    assert "450 waiting for review." in first and "Items 1-200 of 450." in first
    assert len(rows(first)) == 200 and 'id="next"' in first and 'id="prev"' not in first
    assert 'href="/?page=2"' in first

    status, middle = get(port, "/?page=2")
    assert status == 200 and "Items 201-400 of 450." in middle
    assert len(rows(middle)) == 200 and set(rows(middle)).isdisjoint(rows(first))
    assert 'href="/?page=1"' in middle and 'href="/?page=3"' in middle

    status, last = get(port, "/?page=3")
    assert status == 200 and len(rows(last)) == 50
    assert 'id="next"' not in last and 'id="prev"' in last
    assert len(set(rows(first) + rows(middle) + rows(last))) == ITEMS

    assert get(port, "/?page=99")[1].count('class="open"') == 50  # past the end: the last page
    assert get(port, "/?page=x")[0] == 400


def test_an_item_page_leads_to_the_next_waiting_item(port: int) -> None:
    status, html = get(port, "/item/1")
    assert status == 200
    assert 'href="/item/2"' in html


def test_review_list_prints_200_at_a_time_and_the_command_for_more(waiting: Path) -> None:
    first = CliRunner().invoke(cli, ["review", str(waiting), "--list"])
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[0] == "450 waiting for review:" and len(lines) == 202
    assert lines[-1] == f"items 1-200 of 450; next: chainfleet review {waiting} --list --page 2"

    last = CliRunner().invoke(cli, ["review", str(waiting), "--list", "--page", "3"])
    assert last.exit_code == 0 and len(last.output.splitlines()) == 52
    assert last.output.splitlines()[-1] == "items 401-450 of 450"

    past = CliRunner().invoke(cli, ["review", str(waiting), "--list", "--page", "4"])
    assert past.exit_code == 2 and "past the end" in past.output
