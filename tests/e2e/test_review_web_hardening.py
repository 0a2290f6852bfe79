"""The review page's answers to bad input, its security headers, and its Host/Origin checks.

Real HTTP against ``make_app`` served on 127.0.0.1 in a thread of this process (so the
worktree's code runs), with asyncio's debug mode on: there aiohttp's own 500 page shows the
traceback, which the page must never send.
"""

from __future__ import annotations

import asyncio
import http.client
import queue
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web

from chainfleet.review.session import ReviewSession
from chainfleet.review.web import make_app

TOKEN = "t0ken-for-tests"
FORM = "application/x-www-form-urlencoded"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: str


@dataclass
class Page:
    port: int

    def ask(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        cookie: str | None = TOKEN,
    ) -> Answer:
        """One request; with the token's cookie, as a browser sends it after the first visit."""
        headers = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        if cookie is not None:
            headers["Cookie"] = f"chainfleet-review-{self.port}={cookie}"
        if body is not None:
            headers.setdefault("Content-Type", FORM)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, quote(path, safe="/?&="), body=body, headers=headers)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read().decode("utf-8", "replace"))
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Answer:
        return self.ask("GET", path, headers=headers)

    def post(self, path: str, body: bytes, **headers: str) -> Answer:
        return self.ask("POST", path, body=body, headers=headers)


@pytest.fixture
def page(four_waiting: Path) -> Iterator[Page]:
    """The review page of four waiting items (qids 1-4), served in a thread."""
    started: queue.Queue[tuple[int, asyncio.AbstractEventLoop, asyncio.Event] | BaseException] = queue.Queue()

    async def serve() -> None:
        with ReviewSession.open(four_waiting, reviewer="webby") as session:
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
            asyncio.run(serve(), debug=True)
        except BaseException as exc:  # the fixture reports it instead of hanging
            started.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    got = started.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    port, loop, stop = got
    try:
        yield Page(port)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=60)


def decided(out: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(out / "run.db") as db:
        return db.execute("SELECT item_id, action FROM review_decisions ORDER BY did").fetchall()


BOUNDARY = "b0undary"
GARBAGE = f"multipart/form-data; boundary={BOUNDARY}"


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "expected"),
    [
        ("GET", "/item/1?undo=\u00b2", None, None, 400),
        ("GET", "/item/1?undo=99999999999999999999999", None, None, 404),
        ("GET", "/item/99999999999999999999999", None, None, 404),
        ("GET", "/item/" + "9" * 5000, None, None, 404),
        ("GET", "/item/\u0661", None, None, 400),  # an Arabic-Indic digit one
        ("POST", "/item/99999999999999999999999", b"action=approve", FORM, 404),
        ("POST", "/undo/99999999999999999999999", b"", FORM, 404),
        ("POST", "/undo/\u00b2", b"", FORM, 400),
        ("POST", "/bulk", b"qid=abc", FORM, 400),
        ("POST", "/bulk", b"qid=1&qid=99999999999999999999999", FORM, 404),
        ("POST", "/bulk", b"--b0undary\r\nContent-Disposition: garbage\r\n\r\n\xff\xfe", GARBAGE, 400),
        ("POST", "/item/1", b"--b0undary\r\n\x00\x01 not a part", GARBAGE, 400),
        ("POST", "/item/1", b"\xff\xfe\x00 not a form", "multipart/form-data", 400),
    ],
)
def test_bad_numbers_and_forms_are_a_clean_400_or_404(
    page: Page,
    four_waiting: Path,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str | None,
    expected: int,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = page.ask(method, path, body=body, headers=headers)
    assert answer.status == expected, answer.body
    assert "Traceback" not in answer.body
    assert 0 < len(answer.body) < 200
    assert decided(four_waiting) == []  # nothing was decided by a bad request


def test_good_requests_still_work(page: Page, four_waiting: Path) -> None:
    assert page.get("/").status == 200
    assert page.get("/item/1?undo=7").status == 200
    assert page.get("/item/9").status == 404
    answer = page.ask("POST", "/bulk", body=b"qid=1&qid=2&qid=999")
    assert answer.status == 303
    assert decided(four_waiting) == [("1", "approve"), ("2", "approve")]


def test_every_answer_carries_the_security_headers(page: Page) -> None:
    answers = [
        page.get("/"),
        page.get("/item/1"),
        page.get("/item/9"),  # 404
        page.get("/item/1?undo=\u00b2"),  # 400
        page.ask("GET", "/", cookie=None),  # 403: no token
        page.ask("GET", f"/?token={TOKEN}", cookie=None),  # 303: the token becomes a cookie
        page.ask("GET", "/", headers={"Host": "evil.example"}),  # 403: a foreign Host
        page.ask("POST", "/bulk", body=b"qid=1"),  # 303
    ]
    for answer in answers:
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Referrer-Policy"] == "same-origin"  # no-referrer makes Origin "null"
        assert answer.headers["Cache-Control"] == "no-store"


def test_the_pages_scripts_carry_the_nonce_of_their_policy(page: Page) -> None:
    for path in ("/", "/item/1"):
        answer = page.get(path)
        csp = answer.headers["Content-Security-Policy"]
        nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
        assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
        assert answer.body.count("<script") == answer.body.count(f'<script nonce="{nonce}">') == 2
    assert (
        page.get("/").headers["Content-Security-Policy"] != page.get("/").headers["Content-Security-Policy"]
    )


def test_a_cross_site_post_is_refused_even_with_the_token(page: Page, four_waiting: Path) -> None:
    for origin in (
        "http://evil.example",
        "null",
        f"http://127.0.0.1:{page.port + 1}",
        f"https://127.0.0.1:{page.port}",
    ):
        answer = page.post("/item/1", b"action=approve", Origin=origin)
        assert answer.status == 403, origin
        assert page.post("/bulk", b"qid=1&qid=2", Origin=origin).status == 403
        assert page.post("/undo/1", b"", Origin=origin).status == 403
    assert decided(four_waiting) == []
    for did, own in enumerate((f"http://127.0.0.1:{page.port}", f"http://localhost:{page.port}"), start=1):
        assert page.post("/item/1", b"action=approve", Origin=own, Host=own.split("//")[1]).status == 303
        assert page.post(f"/undo/{did}", b"", Origin=own).status == 303
    assert page.post("/item/1", b"action=approve").status == 303  # no Origin (curl, older browsers)
    assert decided(four_waiting) == [("1", "approve"), ("1", "approve"), ("1", "approve")]


def test_a_foreign_host_is_refused_even_with_the_token(page: Page, four_waiting: Path) -> None:
    port = page.port
    for host in (
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1:{port + 1}",
        "127.0.0.1",
        f"127.0.0.2:{port}",
    ):
        assert page.get("/", Host=host).status == 403, host
        assert page.post("/bulk", b"qid=1", Host=host).status == 403, host
    assert decided(four_waiting) == []
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
        assert page.get("/", Host=host).status == 200, host


def test_the_token_in_the_url_becomes_a_cookie_and_leaves_the_url(page: Page, four_waiting: Path) -> None:
    first = page.ask("GET", f"/item/2?msg=hello&token={TOKEN}", cookie=None)
    assert first.status == 303
    assert first.headers["Location"] == "/item/2?msg=hello"
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith(f"chainfleet-review-{page.port}={TOKEN};")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    for path in ("/", "/item/2?msg=hello"):
        answer = page.get(path)  # with the cookie
        assert answer.status == 200
        assert TOKEN not in answer.body  # no link or form carries it
    assert page.get("/item/1?undo=1").status == 200
    decided_page = page.post("/item/1", b"action=approve")
    assert decided_page.status == 303
    assert TOKEN not in decided_page.headers["Location"]
    for wrong in ("", "nope", TOKEN[:-1]):
        assert page.ask("GET", "/", cookie=wrong).status == 403
        refused = page.ask("GET", f"/?token={wrong}", cookie=None)
        assert refused.status == 403
        assert "Set-Cookie" not in refused.headers
    assert page.ask("POST", "/bulk", body=b"qid=2", cookie="nope").status == 403
    assert page.ask("POST", f"/bulk?token={TOKEN}", body=b"qid=2", cookie=None).status == 303  # a script
    assert decided(four_waiting) == [("1", "approve"), ("2", "approve")]
