"""``chainfleet review OUT_DIR --web``: the review queue as a local web page (aiohttp).

Safe by default: the server listens on 127.0.0.1 only, on a random port, and every request
must carry the random token printed with the URL (else 403), so another user of the machine,
or a web page in another tab, cannot read the outputs or decide anything. The first visit
with ``?token=`` stores it in an HttpOnly, SameSite=Strict cookie and redirects to the URL
without it, so no link, form, history entry or Referer of the page holds the token. The
pages are Jinja2 templates shipped with the package, with autoescape on: item text is shown
as text, never run.

Several reviewers can work at once (two browsers, or two servers on one folder): a decision is
atomic in run.db, and a page shown before someone else decided is told "already decided by
NAME at TIME".

Hardened like a public site: every request must name this server in its ``Host`` (no DNS
rebinding) and a POST from another origin is refused, both 403 even with the token; a bad id or
form is a short 400, an id that names nothing a 404, any other failure a plain 500 whose
traceback goes to the terminal, never to the page; every answer carries a Content-Security-Policy
(scripts only with the page's per-request nonce; inline style allowed), X-Frame-Options,
Referrer-Policy and Cache-Control: no-store.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from chainfleet.review.session import EditRefused, ReviewSession, is_json
from chainfleet.store.review_queue import AlreadyDecided, Entry, ReviewError

__all__ = ["make_app", "serve"]

HOST = "127.0.0.1"
#: the names this server answers to (with its port): anything else is DNS rebinding or a mistake
LOOPBACK_NAMES = frozenset({HOST, "localhost", "[::1]"})
#: ids are SQLite integers: a longer number names no item
MAX_ID = 2**63 - 1
#: items on one page of the queue (5,000 on one page made a 1.5 MB page)
PAGE_SIZE = 200
NONCE: web.RequestKey[str] = web.RequestKey("nonce", str)
LOG = logging.getLogger(__name__)
SESSION: web.AppKey[ReviewSession] = web.AppKey("session", ReviewSession)
TOKEN: web.AppKey[str] = web.AppKey("token", str)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def serve(session: ReviewSession, *, port: int = 0, token: str | None = None) -> None:
    """Serve the review page until Ctrl-C; prints the URL (with its token) first."""
    token = token or secrets.token_urlsafe(18)
    try:
        asyncio.run(_serve(session, port, token))
    except KeyboardInterrupt:
        print("review page stopped; go on with: chainfleet resume", session.folder, flush=True)


async def _serve(session: ReviewSession, port: int, token: str) -> None:
    runner = web.AppRunner(make_app(session, token))
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"review page: http://{HOST}:{bound}/?token={token}", flush=True)
    print("(only this machine can open it; Ctrl-C stops it)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def make_app(session: ReviewSession, token: str) -> web.Application:
    app = web.Application(middlewares=[_plain_errors, _require_own_host_and_origin, _require_token])
    app.on_response_prepare.append(_security_headers)
    app[SESSION], app[TOKEN] = session, token
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.PackageLoader("chainfleet.review", "templates"),
        autoescape=True,  # item text holding <script> is shown, never run
        undefined=jinja2.StrictUndefined,
    )
    app.router.add_get("/", queue_page)
    app.router.add_get("/item/{qid}", item_page)
    app.router.add_post("/item/{qid}", decide)
    app.router.add_post("/bulk", bulk_approve)
    app.router.add_post("/undo/{did}", undo)
    return app


@web.middleware
async def _plain_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Any failure but an HTTP answer is a plain 500: the traceback goes to the terminal only."""
    request[NONCE] = secrets.token_urlsafe(16)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        LOG.exception("review page: %s %s failed", request.method, request.path)
        return web.Response(
            status=500, text="500: the review page failed; the terminal running it says why\n"
        )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    nonce = request.get(NONCE, "")
    scripts = f"'nonce-{nonce}'" if nonce else "'none'"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    # not no-referrer: with it a browser posts this page's own forms with "Origin: null", which
    # must be refused (a foreign page can send it too); same-origin keeps the token from other sites
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


@web.middleware
async def _require_own_host_and_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 unless Host names this server (loopback, its port), and a POST's Origin, if any, is it."""
    own = _own_hosts(request)
    if request.host.lower() not in own:
        return web.Response(status=403, text="403: this page answers only to its own address (Host)\n")
    origin = request.headers.get("Origin")
    if request.method == "POST" and origin is not None and origin.lower() not in {f"http://{h}" for h in own}:
        return web.Response(status=403, text="403: a form from another site cannot decide here (Origin)\n")
    return await handler(request)


def _own_hosts(request: web.Request) -> set[str]:
    """``name:port`` for each loopback name and the address this request came in on."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return set()
    address, port = str(sockname[0]), int(sockname[1])
    names = LOOPBACK_NAMES | {f"[{address}]" if ":" in address else address}
    return {f"{name}:{port}" for name in names}


def _id(text: str, what: str) -> int:
    """An id from the path, query or form: ASCII digits (else 400) small enough to exist (else 404)."""
    if not (text.isascii() and text.isdigit()):
        raise web.HTTPBadRequest(text=f"400: {what} must be a number\n")
    if len(text) > len(str(MAX_ID)) or int(text) > MAX_ID:  # int() refuses 4,301 digits
        raise web.HTTPNotFound(text=f"404: no {what} {text[:20]}...\n")
    return int(text)


async def _form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The posted form, or 400 for a body that is not one."""
    try:
        return await request.post()
    except (ValueError, LookupError, AssertionError, HttpProcessingError):  # a too large body stays 413
        raise web.HTTPBadRequest(text="400: the request's body is not a readable form\n") from None


@web.middleware
async def _require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token from the cookie; one in the URL (the printed one) becomes the cookie, then leaves the URL."""
    token, cookie = request.app[TOKEN], _cookie_name(request)
    given = request.query.get("token")
    if given is None and _same(request.cookies.get(cookie, ""), token):
        return await handler(request)
    if given is not None and _same(given, token):
        if request.method != "GET":  # a script posting with ?token=: no cookie jar to fill
            return await handler(request)
        rest = [(key, value) for key, value in request.query.items() if key != "token"]
        response = web.Response(status=303, headers={"Location": str(request.rel_url.with_query(rest))})
        response.set_cookie(cookie, token, path="/", httponly=True, samesite="Strict")
        return response
    return web.Response(status=403, text="403: this page needs the token printed with its URL\n")


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _cookie_name(request: web.Request) -> str:
    """One cookie per port: cookies ignore ports, and two review pages may run at once."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    return f"chainfleet-review-{sockname[1] if sockname else 0}"


def _render(request: web.Request, name: str, status: int = 200, **values: Any) -> web.Response:
    session = request.app[SESSION]
    html = (
        request.app[TEMPLATES]
        .get_template(name)
        .render(
            nonce=request[NONCE],
            reviewer=session.reviewer,
            folder=str(session.folder),
            **values,
        )
    )
    return web.Response(status=status, text=html, content_type="text/html")


async def queue_page(request: web.Request) -> web.Response:
    """One page of the queue (``?page=N``, :data:`PAGE_SIZE` items each), with links to the
    previous and next pages; a page past the end shows the last one."""
    session = request.app[SESSION]
    message = request.query.get("msg", "")
    total = session.waiting_count()
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(_id(request.query.get("page", "1"), "page") or 1, pages)
    entries = session.waiting(offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    first = (page - 1) * PAGE_SIZE + 1
    return _render(
        request,
        "queue.html",
        entries=entries,
        message=message,
        total=total,
        page=page,
        pages=pages,
        shown=f"{first:,}-{first + len(entries) - 1:,} of {total:,}" if pages > 1 else "",
    )


async def item_page(request: web.Request) -> web.Response:
    entry = _entry(request)
    undo_id = request.query.get("undo", "")
    values = _item_values(
        request,
        entry,
        message=request.query.get("msg", ""),
        undo=_id(undo_id, "decision") if undo_id else None,
    )
    return _render(request, "item.html", **values)


def _entry(request: web.Request) -> Entry:
    entry = request.app[SESSION].queue.get(_id(request.match_info["qid"], "item"))
    if entry is None:
        raise web.HTTPNotFound(text="404: no such item in the review queue\n")
    entry.input = request.app[SESSION].queue.item_input(entry)
    return entry


def _item_values(request: web.Request, entry: Entry, **extra: Any) -> dict[str, Any]:
    session = request.app[SESSION]
    order = session.stages_order
    stages = order[: order.index(entry.stage) + 1] if entry.stage in order else [entry.stage]
    values: dict[str, Any] = {
        "entry": entry,
        "stages": stages,
        "pretty": _pretty(entry.output),
        "edited": entry.output,
        "next_qid": session.queue.next_waiting(entry.qid),
        "message": "",
        "problem": "",
        "undo": None,
    }
    return {**values, **extra}


async def decide(request: web.Request) -> web.Response:
    """One decision from the item page; a stale page gets "already decided by NAME at TIME"."""
    session, entry = request.app[SESSION], _entry(request)
    form = await _form(request)
    action, who = str(form.get("action", "")), str(form.get("reviewer") or session.reviewer)
    try:
        if action == "approve":
            session.approve(entry.item_id, qid=entry.qid, reviewer=who)
        elif action == "edit":
            session.edit(entry.item_id, str(form.get("output", "")), qid=entry.qid, reviewer=who)
        elif action == "reject":
            note, stage = str(form.get("note", "")), str(form.get("from_stage") or entry.stage)
            session.reject(entry.item_id, note, from_stage=stage, qid=entry.qid, reviewer=who)
        else:
            raise ReviewError(f"unknown action {action!r}")
    except EditRefused as exc:  # the edit is kept in the page for another try; nothing stored
        values = _item_values(request, entry, problem=exc.reason, edited=str(form.get("output", "")))
        return _render(request, "item.html", status=422, **values)
    except AlreadyDecided as exc:
        return _render(request, "item.html", status=409, **_item_values(request, entry, problem=exc.reason))
    except ReviewError as exc:
        return _render(request, "item.html", status=400, **_item_values(request, entry, problem=exc.reason))
    done = f"{_past(action)} {entry.item_id}"
    following = _item_values(request, entry)["next_qid"]
    target = f"/item/{following}" if following else "/"
    did = session.made[-1].did
    raise web.HTTPSeeOther(f"{target}?msg={_quote(done)}&undo={did}")


async def undo(request: web.Request) -> web.Response:
    """Take a decision back (until a run acted on it): its item waits again."""
    session = request.app[SESSION]
    try:
        entry = session.queue.undo(_id(request.match_info["did"], "decision"))
    except ReviewError as exc:
        raise web.HTTPSeeOther(f"/?msg={_quote(exc.reason)}") from None
    message = f"undone: {entry.item_id} waits again"
    raise web.HTTPSeeOther(f"/item/{entry.qid}?msg={_quote(message)}")


async def bulk_approve(request: web.Request) -> web.Response:
    """Approve every ticked item of the queue page; each one atomically."""
    session = request.app[SESSION]
    form = await _form(request)
    who = str(form.get("reviewer") or session.reviewer)
    qids = [_id(str(value), "item") for value in form.getall("qid", [])]  # all checked before any is decided
    approved, refused = 0, []
    for qid in qids:
        entry = session.queue.get(qid)
        if entry is None:
            continue
        try:
            session.approve(entry.item_id, qid=entry.qid, reviewer=who)
            approved += 1
        except ReviewError as exc:
            refused.append(f"{entry.item_id}: {exc.reason}")
    message = f"approved {approved}" + (f"; not approved: {'; '.join(refused)}" if refused else "")
    raise web.HTTPSeeOther(f"/?msg={_quote(message)}")


def _past(action: str) -> str:
    return {"approve": "approved", "edit": "edited", "reject": "rejected"}.get(action, action)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _pretty(text: str) -> str:
    if is_json(text):
        import json

        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return text
