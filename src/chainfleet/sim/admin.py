"""Who may change a running sim-server: the admin routes refuse what a web page could send.

Any page open in a browser can POST to ``http://127.0.0.1:PORT`` with a ``text/plain`` body
(a "simple" request: no CORS preflight), so an unguarded ``POST /sim/config`` lets any site
change the server's settings. The admin routes (``/sim/config`` and ``/sim/reset``) therefore
need both:

- ``Content-Type: application/json``: a browser sends that cross-origin only after a CORS
  preflight, which this server never answers, so the request never leaves the browser;
- no ``Origin`` header, or one on this machine (``http://127.0.0.1:*``, ``http://localhost:*``,
  ``http://[::1]:*``): scripts and the project's own tools send none.

A refusal is 415 or 403 with a JSON error saying what to send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["admin_guard"]

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_ADMIN = ("/sim/config", "/sim/reset")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusal(request: web.Request) -> web.Response | None:
    if request.method != "POST" or request.path not in _ADMIN:
        return None
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).hostname not in _LOCAL_HOSTS:
        message = "admin routes refuse requests from web pages (an Origin not on this machine)"
        return web.json_response({"error": {"message": message}}, status=403)
    if request.path == "/sim/config" and request.content_type != "application/json":
        message = "send the settings as Content-Type: application/json"
        return web.json_response({"error": {"message": message}}, status=415)
    return None


@web.middleware
async def admin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp middleware: refuse an admin request a browser page could have made."""
    return _refusal(request) or await handler(request)
