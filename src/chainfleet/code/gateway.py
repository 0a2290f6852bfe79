"""The gateway: one model call of the user's own chain, made the way chainfleet makes its own.

Both doors of "bring your own chain" end here: the Python door's httpx transport
(:mod:`chainfleet.code.transport`) and the command door's local proxy hand each HTTP request to
:meth:`Gateway.send` with the :class:`ItemScope` of the item it is made for. The gateway then

1. looks the request up in the run's journal (:mod:`chainfleet.store.journal`) by the item, the
   request's hash and its occurrence: a hit is answered at once from the store, counted as
   ``replayed``, never sent, never paid;
2. reads the provider, the model and a token estimate from the request
   (:mod:`chainfleet.code.wire`); a path it cannot read passes through unlimited and is
   counted in ``ctx.passthrough`` for a warning in the report;
3. makes the call through the run's own machinery: the model's limiter (told, learned from
   headers, shared, ``--limit-group``), the one retry policy (429, 5xx, timeouts, dropped
   connections, every retry-after spelling), the calls table, the stats and the price
   (:class:`chainfleet.chain.calls.Calls`);
4. journals the answer (a stream whole) and makes it durable before the caller sees it.

A call that fails for good answers with the provider's last error response, so the user's SDK
raises what it always raises; a failure without one (a timeout, a dropped connection) is
raised as chainfleet's error. Either way the item keeps its kind: the runner reads it from
``scope.failure``.

Example::

    gateway = Gateway(ctx)
    scope = ItemScope(ctx, chain, gateway)
    response = await gateway.send(scope, httpx.Request("POST", url, json=body))
"""

from __future__ import annotations

import contextvars
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx2 as httpx

from chainfleet.chain.calls import Attempt, Calls, Prepared
from chainfleet.code.transport import http_client
from chainfleet.code.wire import Target, decode_json, read_target, request_hash, usage_of
from chainfleet.errors import CallError, ConnectionFailed, FatalError, Timeout
from chainfleet.limits.headers import keep_headers
from chainfleet.providers import Completion, classify_error, error_fields
from chainfleet.store.journal import JournalEntry

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext
    from chainfleet.chain.progress import Chain

__all__ = ["STAGE", "Answer", "Gateway", "ItemScope"]

#: the stage label of the calls made in this task (``with fleet.stage(...)``; None: none set)
STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("chainfleet_stage", default=None)

#: response headers a replayed answer needs besides those :func:`keep_headers` keeps
_REPLAYED_HEADERS = ("content-type",)


@dataclass(eq=False)
class ItemScope:
    """Whose call it is: the run, the item's chain, the stage label the user set, and how many
    times each request occurred so far in this run of the item (the journal's occurrence)."""

    ctx: RunContext
    chain: Chain
    gateway: Gateway
    #: the label of the calls made now (``fleet.stage``); None: each call is labelled by its model
    stage: str | None = None
    seen: Counter[str] = field(default_factory=Counter)
    #: the last call that failed for good (its kind becomes the item's if the chain raises)
    failure: CallError | None = None
    #: calls answered from the journal in this run of the item, and calls made
    replayed: int = 0
    called: int = 0

    def occurrence(self, digest: str) -> int:
        """How many times ``digest`` occurred before in this run of the item (and count it)."""
        number = self.seen[digest]
        self.seen[digest] += 1
        return number

    def label(self, target: Target, path: str) -> str:
        """The stage a call is counted under: ``fleet.stage``'s, else the scope's (the proxy
        sets it), else the model's name, else the path."""
        return STAGE.get() or self.stage or target.model or path


@dataclass(frozen=True)
class Answer:
    """What the provider answered to one attempt (the body read whole and decoded)."""

    status: int
    headers: httpx.Headers
    content: bytes


class Gateway:
    """Sends the calls of one run's code chains; see the module docstring."""

    def __init__(self, ctx: RunContext, upstream: httpx.AsyncBaseTransport | None = None) -> None:
        self.ctx = ctx
        self.calls = Calls(ctx)
        self._upstream = upstream
        self._client: httpx.AsyncClient | None = None

    @property
    def upstream(self) -> httpx.AsyncBaseTransport:
        """The transport the real requests go out on (made on first use)."""
        if self._upstream is None:
            self._upstream = httpx.AsyncHTTPTransport()
        return self._upstream

    @property
    def client(self) -> httpx.AsyncClient:
        """One httpx client over :class:`~chainfleet.code.transport.FleetTransport` for the run
        (``fleet.openai()`` and ``fleet.anthropic()`` share it and its connections)."""
        if self._client is None:
            self._client = http_client()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self._upstream is not None:
            await self._upstream.aclose()

    async def send(self, scope: ItemScope, request: httpx.Request) -> httpx.Response:
        """Answer one request of ``scope``'s item: from the journal, else from the provider."""
        body = await request.aread()
        path = request.url.path
        digest = request_hash(request.method, path, body)
        occurrence = scope.occurrence(digest)
        run_id, index = self.ctx.run_id, scope.chain.item.index
        found = self.ctx.store.journal.get(run_id, index, digest, occurrence)
        if found is not None:
            scope.replayed += 1
            self.ctx.stats.replayed += 1
            return _response(found.status, found.headers, found.body, request)
        target = read_target(path, body)
        if target.provider is None:
            self.ctx.passthrough[path] = self.ctx.passthrough.get(path, 0) + 1
        label = scope.label(target, path)
        answer: dict[str, Answer] = {}
        prepared = self._prepared(request, body, target, answer)
        scope.called += 1
        stats = self.ctx.stats.stage(label)
        stats.in_flight += 1
        try:
            called = await self.calls.attempts(scope.chain, label, prepared, stats)
        except CallError as exc:
            return self._failed(scope, exc, request, answer.get("error"))
        finally:
            stats.in_flight -= 1
        ok = answer["ok"]
        headers = _kept(ok.headers)
        entry = JournalEntry(
            digest,
            occurrence,
            "http",
            ok.status,
            ok.content,
            headers,
            label,
            called.input_tokens,
            called.output_tokens,
        )
        self.ctx.store.journal.put(run_id, index, entry)
        await self.ctx.store.durable()
        return _response(ok.status, headers, ok.content, request)

    def _prepared(
        self, request: httpx.Request, body: bytes, target: Target, answer: dict[str, Answer]
    ) -> Prepared:
        """The call made ready for :meth:`Calls.attempts`: each attempt goes through the model's
        limiter (none for an unknown path) and sends a fresh copy of the request."""
        spec = target.spec
        limiter = self.ctx.limits.of(spec) if spec is not None else None

        async def call(record: Attempt) -> tuple[str, int, int]:
            async def send() -> Completion:
                return await self._attempt(request, body, target, answer)

            completion = await self.calls.metered(limiter, target.estimate, record, send)
            return "", completion.input_tokens, completion.output_tokens

        return Prepared(call=call, key_parts=(), spec=spec, gated=limiter is not None)

    async def _attempt(
        self, request: httpx.Request, body: bytes, target: Target, answer: dict[str, Answer]
    ) -> Completion:
        """One attempt upstream; an error answer or a failed connection raises a ``CallError``."""
        fresh = httpx.Request(
            request.method, request.url, headers=request.headers, content=body, extensions=request.extensions
        )
        name = target.provider or request.url.host
        answer.pop("error", None)  # an earlier attempt's error answer is not this one's
        try:
            response = await self.upstream.handle_async_request(fresh)
            try:
                content = await response.aread()
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise Timeout(f"{name}: the request timed out") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{name}: connection failed: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            message, code, kind = error_fields(decode_json(content))
            error = classify_error(
                response.status_code,
                message or content[:200].decode("utf-8", "replace"),
                code=code,
                kind=kind,
                headers=response.headers,
                provider=name,
            )
            answer["error"] = Answer(response.status_code, response.headers, content)
            raise error
        answer["ok"] = Answer(response.status_code, response.headers, content)
        usage = usage_of(content, stream=target.stream)
        return Completion(
            text="",
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            headers=dict(response.headers),
        )

    def _failed(
        self, scope: ItemScope, exc: CallError, request: httpx.Request, answer: Answer | None
    ) -> httpx.Response:
        """A call that failed for good: remembered on the scope (and a fatal one stops the run);
        the provider's last error answer goes back to the caller, else the error is raised."""
        exc.item_id = scope.chain.item.id
        scope.failure = exc
        if isinstance(exc, FatalError):
            self.ctx.state.fail(exc)
        if answer is None:
            raise exc
        return _response(answer.status, _kept(answer.headers), answer.content, request)


def _kept(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a replayed answer carries: its type, request id and rate-limit headers."""
    kept = keep_headers(headers)
    for name in _REPLAYED_HEADERS:
        if name in headers:
            kept[name] = headers[name]
    return kept


def _response(
    status: int, headers: Mapping[str, str], content: bytes, request: httpx.Request
) -> httpx.Response:
    """A complete answer the client reads as if it came from the provider (decoded already:
    no content-encoding, its own length)."""
    return httpx.Response(status, headers=dict(headers), content=content, request=request)
