"""The sim-server's admin routes, and who may use them: not what a web page could send.

Each part of the server that can be watched and changed at run time gets the same three routes
under its prefix (:func:`add_admin_routes`): the server itself under ``/sim`` and its batch jobs
under ``/sim/batch``.

- ``GET {prefix}/stats``: the counts since the start or the last reset;
- ``POST {prefix}/reset``: zero them (the answer is the fresh counts);
- ``POST {prefix}/config``: a JSON object of settings to change; the answer is the settings
  now (keys masked), or a 422 naming each bad one.

Any page open in a browser can POST to ``http://127.0.0.1:PORT`` with a ``text/plain`` body
(a "simple" request: no CORS preflight), so an unguarded ``POST /sim/config`` lets any site
change the server's settings. The writing routes under a prefix in :data:`GUARDED` therefore
need both (:func:`admin_guard`, an aiohttp middleware):

- ``Content-Type: application/json`` (``config`` only): a browser sends that cross-origin only
  after a CORS preflight, which this server never answers, so the request never leaves the
  browser;
- no ``Origin`` header, or one on this machine (``http://127.0.0.1:*``, ``http://localhost:*``,
  ``http://[::1]:*``): scripts and the project's own tools send none.

A refusal is 415 or 403 with a JSON error saying what to send.

Example::

    app = web.Application(middlewares=[admin_guard])
    add_admin_routes(app, "/sim", server)       # server: stats(), reset(), configure(**changes)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

__all__ = ["GUARDED", "Administered", "add_admin_routes", "admin_guard"]

#: the prefixes whose ``config`` and ``reset`` routes the guard covers: every admin prefix
GUARDED = ("/sim", "/sim/batch")

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_GUARDED_PATHS = frozenset(f"{prefix}/{route}" for prefix in GUARDED for route in ("config", "reset"))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Public(Protocol):
    def public(self) -> dict[str, Any]: ...


class Administered(Protocol):
    """What the admin routes run on: counts to show and reset, settings to change."""

    def stats(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def configure(self, **changes: Any) -> _Public: ...


def add_admin_routes(app: web.Application, prefix: str, target: Administered) -> None:
    """``GET {prefix}/stats``, ``POST {prefix}/reset`` and ``POST {prefix}/config`` on ``target``."""

    async def stats(request: web.Request) -> web.StreamResponse:
        return web.json_response(target.stats())

    async def reset(request: web.Request) -> web.StreamResponse:
        target.reset()
        return web.json_response(target.stats())

    async def config(request: web.Request) -> web.StreamResponse:
        return await _configure(request, target)

    app.router.add_get(f"{prefix}/stats", stats)
    app.router.add_post(f"{prefix}/reset", reset)
    app.router.add_post(f"{prefix}/config", config)


async def _configure(request: web.Request, target: Administered) -> web.Response:
    try:
        changes = json.loads(await request.read())
    except ValueError:
        changes = None
    if not isinstance(changes, dict):
        return web.json_response({"error": {"message": "send a JSON object of settings"}}, status=422)
    try:
        settings = target.configure(**changes)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(map(str, d['loc'])) or 'settings'}: {d['msg']}" for d in details)
        return web.json_response({"error": {"message": message, "details": details}}, status=422)
    return web.json_response(settings.public())


def _refusal(request: web.Request) -> web.Response | None:
    if request.method != "POST" or request.path not in _GUARDED_PATHS:
        return None
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).hostname not in _LOCAL_HOSTS:
        message = "admin routes refuse requests from web pages (an Origin not on this machine)"
        return web.json_response({"error": {"message": message}}, status=403)
    if request.path.endswith("/config") and request.content_type != "application/json":
        message = "send the settings as Content-Type: application/json"
        return web.json_response({"error": {"message": message}}, status=415)
    return None


@web.middleware
async def admin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp middleware: refuse an admin request a browser page could have made."""
    return _refusal(request) or await handler(request)
