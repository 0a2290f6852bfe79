"""The httpx transport that sends the user's calls through chainfleet.

Every modern Python client of a model API is built on httpx: the official openai and
anthropic SDKs (``http_client=``), LangChain's ``ChatOpenAI(http_async_client=...)``,
pydantic-ai's providers, the OpenAI Agents SDK (through an ``AsyncOpenAI``). An httpx
transport is the seam: :class:`FleetTransport` finds whose call it is in a context variable
(:data:`CURRENT`, set by the runner around each item's work, and inherited by every task the
user's code starts under it) and hands the request to :meth:`Gateway.send`.

A request made outside any item (a client used at import time, a warm-up call) goes straight
out, as if chainfleet were not there.

Example::

    client = openai.AsyncOpenAI(http_client=chainfleet.http_client(), max_retries=0)
"""

from __future__ import annotations

import contextvars
from typing import Any, Protocol

import httpx2 as httpx

__all__ = ["CURRENT", "FleetTransport", "Scope", "Sender", "current_scope", "http_client"]


class Sender(Protocol):
    """What sends a scope's request: :class:`~chainfleet.code.gateway.Gateway`."""

    async def send(self, scope: Any, request: httpx.Request) -> httpx.Response: ...


class Scope(Protocol):
    """Whose call it is: :class:`~chainfleet.code.gateway.ItemScope` (named structurally
    here, so that the gateway may make its clients from this module)."""

    @property
    def gateway(self) -> Sender: ...


#: the item whose work is running in this task (None: outside any item)
CURRENT: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("chainfleet_item", default=None)


def current_scope() -> Scope | None:
    """The :class:`~chainfleet.code.gateway.ItemScope` of the item whose work runs here, if any."""
    return CURRENT.get()


class FleetTransport(httpx.AsyncBaseTransport):
    """Sends each request through the gateway of the item it is made for."""

    def __init__(self, direct: httpx.AsyncBaseTransport | None = None) -> None:
        self._direct = direct

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scope = CURRENT.get()
        if scope is None:  # not inside an item: straight out
            if self._direct is None:
                self._direct = httpx.AsyncHTTPTransport()
            return await self._direct.handle_async_request(request)
        return await scope.gateway.send(scope, request)

    async def aclose(self) -> None:
        if self._direct is not None:
            await self._direct.aclose()


def http_client(**kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose requests go through chainfleet (limits, retries, the
    journal, the report); ``kwargs`` go to the client (``timeout=``, ``headers=`` ...).

    Turn the client's own retries off (``max_retries=0``): chainfleet retries, with the run's
    one policy."""
    kwargs.setdefault("timeout", httpx.Timeout(600.0, connect=10.0))
    return httpx.AsyncClient(transport=FleetTransport(), **kwargs)
