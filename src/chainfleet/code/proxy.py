"""The command door's local proxy: every model call a child makes, known as its item's call.

A child started by ``chainfleet exec`` gets two variables pointing here::

    OPENAI_BASE_URL=http://127.0.0.1:PORT/<token>/v1      the openai SDKs append /chat/completions ...
    ANTHROPIC_BASE_URL=http://127.0.0.1:PORT/<token>      the anthropic SDKs append /v1/messages

The ``<token>`` is per item (:meth:`Proxy.admit`), so the proxy knows whose call each request
is, and answers it with the ``send`` function it was built with: the run's
:class:`~chainfleet.code.gateway.Gateway` (limits, retries, journal, stats), or
:func:`pass_through` (no run: plain forwarding). Either way the request is rewritten first
for the real upstream (:class:`Upstreams`): the ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``
chainfleet itself was given, else the official endpoints. A request with ``anthropic-version``
or ``x-api-key`` is an Anthropic call; every other one is OpenAI's.

Keys: the child's own ``Authorization`` or ``x-api-key`` goes through untouched; a child that
sends none gets chainfleet's ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` (a child whose SDK needs
a key to start is given :data:`PLACEHOLDER_KEY`, which counts as none). No header is ever
logged or put in an error.

A child may label a call's stage with the header ``X-Chainfleet-Stage: research`` (the report,
progress and timeline show it; the upstream never sees it); else the call is labelled by its
model.

Answers are streamed back as they arrive (server-sent events included). A path the run cannot
read (not chat completions, responses, embeddings or messages) still goes through, and is
remembered in :attr:`Proxy.unknown_paths` for the report's warning. A call the upstream never
answered (retries spent, a dropped connection) is a 502 whose JSON body says why, in the
OpenAI error shape both SDKs read.

The server is aiohttp on 127.0.0.1 and a port the system picks.

Example::

    async with Proxy(pass_through(client)) as proxy:
        with proxy.admit(scope) as proxied:
            await run_child(argv, env=child_env(os.environ, proxied), stdin=None, timeout=None)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx2
from aiohttp import web

from chainfleet.code.gateway import STAGE
from chainfleet.errors import CallError
from chainfleet.redact import clip

__all__ = [
    "KNOWN_PATHS",
    "PLACEHOLDER_KEY",
    "Proxy",
    "Send",
    "Upstreams",
    "child_env",
    "gateway_send",
    "pass_through",
]

log = logging.getLogger(__name__)

#: the paths whose requests the run reads (provider, model, tokens); others pass through
KNOWN_PATHS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/messages"})

#: the official endpoints, for a chainfleet given no base URL of its own
OPENAI_URL, ANTHROPIC_URL = "https://api.openai.com/v1", "https://api.anthropic.com"

#: the key a child is given when chainfleet has none to pass on: the SDKs refuse to start
#: without one, and the proxy drops it (a child's real key goes through as it is)
PLACEHOLDER_KEY = "chainfleet-proxy"

#: the header a child may send to label a call's stage (``research``); the upstream never sees it
STAGE_HEADER = "x-chainfleet-stage"

#: request headers that belong to one hop, or that the proxy sets itself
HOP_REQUEST = frozenset(
    {
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
        "accept-encoding",
        "keep-alive",
        STAGE_HEADER,
    }
)
#: response headers the proxy must not copy: it streams decoded bytes in chunks of its own
HOP_RESPONSE = frozenset(
    {"connection", "content-length", "transfer-encoding", "content-encoding", "keep-alive"}
)

#: what answers one rewritten request for one item: the run's gateway, or plain forwarding
Send = Callable[[Any, httpx2.Request], Awaitable[httpx2.Response]]


@dataclass(frozen=True, slots=True)
class Upstreams:
    """Where calls really go, and the keys for children that send none (never shown)."""

    openai: str = OPENAI_URL
    anthropic: str = ANTHROPIC_URL
    openai_key: str | None = field(default=None, repr=False)
    anthropic_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Upstreams:
        """The base URLs and keys chainfleet itself was given, else the official endpoints."""
        env = os.environ if env is None else env
        return cls(
            openai=env.get("OPENAI_BASE_URL") or OPENAI_URL,
            anthropic=env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL,
            openai_key=env.get("OPENAI_API_KEY") or None,
            anthropic_key=env.get("ANTHROPIC_API_KEY") or None,
        )

    def url(self, path: str, query: str, *, anthropic: bool) -> str:
        """The upstream URL for ``path`` (as the child asked for it, from ``/v1``): an OpenAI
        base already ends in ``/v1``, an Anthropic base does not."""
        base = (self.anthropic if anthropic else self.openai).rstrip("/")
        if not anthropic and path.startswith("/v1/") and base.endswith("/v1"):
            path = path[3:]
        return f"{base}{path}" + (f"?{query}" if query else "")

    def headers(self, sent: Mapping[str, str], *, anthropic: bool) -> dict[str, str]:
        """The child's headers for the upstream: hop headers dropped, a key added if none (the
        :data:`PLACEHOLDER_KEY` counts as none)."""
        headers = {
            k: v
            for k, v in sent.items()
            if k.lower() not in HOP_REQUEST and v not in (PLACEHOLDER_KEY, f"Bearer {PLACEHOLDER_KEY}")
        }
        lowered = {k.lower() for k in headers}
        if anthropic and "x-api-key" not in lowered and "authorization" not in lowered and self.anthropic_key:
            headers["x-api-key"] = self.anthropic_key
        if not anthropic and "authorization" not in lowered and self.openai_key:
            headers["Authorization"] = f"Bearer {self.openai_key}"
        return headers


def is_anthropic(headers: Mapping[str, str]) -> bool:
    """Whether a request speaks Anthropic's API (its SDKs always send ``anthropic-version``)."""
    return "anthropic-version" in headers or "x-api-key" in headers


async def gateway_send(scope: Any, request: httpx2.Request) -> httpx2.Response:
    """The run's ``send``: the item's :class:`~chainfleet.code.gateway.Gateway` (its scope's)
    answers, from the journal or through the run's limits and retries."""
    response: httpx2.Response = await scope.gateway.send(scope, request)
    return response


def pass_through(client: httpx2.AsyncClient) -> Send:
    """A ``send`` that forwards each request as it is, streaming the answer (no run)."""

    async def send(scope: Any, request: httpx2.Request) -> httpx2.Response:
        return await client.send(request, stream=True)

    return send


class Proxy:
    """The local proxy: an aiohttp server on 127.0.0.1 that answers each item's calls through
    ``send``. Use it as an async context manager; :meth:`admit` gives one item its token."""

    def __init__(self, send: Send, *, upstreams: Upstreams | None = None, host: str = "127.0.0.1") -> None:
        self._send = send
        self._upstreams = upstreams or Upstreams.from_env()
        self._host = host
        self._scopes: dict[str, Any] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        #: paths the run could not read (passed through unlimited), for the report's warning
        self.unknown_paths: set[str] = set()

    def __repr__(self) -> str:
        return f"Proxy(http://{self._host}:{self.port}, {len(self._scopes)} items)"

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Listen on ``host`` and a free port (:attr:`port`)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{token}/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)  # an access log would show tokens
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))  # the system picks the port; we bind it to know it
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def admit(self, scope: Any) -> Iterator[dict[str, str]]:
        """Give ``scope`` (one item's) a token for as long as the block runs; yields the
        variables the item's child needs."""
        token = secrets.token_urlsafe(18)
        self._scopes[token] = scope
        try:
            yield self.env(token)
        finally:
            del self._scopes[token]

    def env(self, token: str) -> dict[str, str]:
        """The base URLs that send a child's calls here, as ``token``'s."""
        root = f"http://{self._host}:{self.port}/{token}"
        return {"OPENAI_BASE_URL": f"{root}/v1", "ANTHROPIC_BASE_URL": root}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        scope = self._scopes.get(request.match_info["token"])
        if scope is None:
            return _error(404, "this chainfleet proxy token belongs to no running item", "not_found")
        path = "/" + request.match_info["path"]
        if path.rstrip("/") not in KNOWN_PATHS:
            self.unknown_paths.add(path)
        anthropic = is_anthropic(request.headers)
        upstream = httpx2.Request(
            request.method,
            self._upstreams.url(path, request.query_string, anthropic=anthropic),
            headers=self._upstreams.headers(request.headers, anthropic=anthropic),
            content=await request.read(),
        )
        label = STAGE.set(request.headers.get(STAGE_HEADER) or STAGE.get())
        try:
            answer = await self._send(scope, upstream)
        except CallError as exc:  # retries spent, or the upstream refused for good
            return _error(exc.status or 502, str(exc), exc.kind)
        except httpx2.HTTPError as exc:
            return _error(502, f"the upstream could not be reached: {type(exc).__name__}", "upstream_error")
        except Exception as exc:  # a fault of chainfleet's own: the child hears of it, the run goes on
            log.exception("the proxy could not answer a call")
            return _error(500, f"chainfleet's proxy failed: {type(exc).__name__}: {exc}", "proxy_error")
        finally:
            STAGE.reset(label)
        try:
            return await _relay(request, answer)
        finally:
            await answer.aclose()


def child_env(base: Mapping[str, str], proxied: Mapping[str, str]) -> dict[str, str]:
    """A child's environment: ``base`` with the proxy's base URLs, and the
    :data:`PLACEHOLDER_KEY` for each SDK whose key ``base`` lacks (the SDKs need one to start)."""
    env = {**base, **proxied}
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        if not env.get(name):
            env[name] = PLACEHOLDER_KEY
    return env


async def _relay(request: web.Request, answer: httpx2.Response) -> web.StreamResponse:
    """Copy ``answer`` to the child as it arrives (an SSE stream chunk by chunk)."""
    response = web.StreamResponse(status=answer.status_code, reason=answer.reason_phrase or None)
    for name, value in answer.headers.multi_items():
        if name.lower() not in HOP_RESPONSE:
            response.headers.add(name, value)
    await response.prepare(request)
    chunks: AsyncIterator[bytes] = answer.aiter_bytes()
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except httpx2.HTTPError as exc:  # the upstream dropped mid-answer: the child sees a cut stream
        log.warning("the upstream answer was cut: %s", type(exc).__name__)
        return response
    await response.write_eof()
    return response


def _error(status: int, message: str, kind: str) -> web.Response:
    """An error in the OpenAI shape (``{"error": {"message", "type"}}``), which both SDKs read."""
    body = {"error": {"message": clip(message, 2000), "type": kind}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")
