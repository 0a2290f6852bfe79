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
4. journals the answer and makes it durable before the caller sees it; a stream
   (``stream=True``) goes to the caller as it arrives and is journaled whole at its end
   (:mod:`chainfleet.code.streams`).

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

import asyncio
import contextvars
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2 as httpx

from chainfleet.chain.calls import Attempt, Called, Calls, Prepared
from chainfleet.code.streams import complete, handed, kept, pass_through
from chainfleet.code.transport import http_client
from chainfleet.code.wire import Target, decode_json, read_target, request_hash, usage_of
from chainfleet.errors import CallError, ConnectionFailed, FatalError, Timeout, UnpricedModel
from chainfleet.providers import Completion, classify_error, error_fields, scrub_secret
from chainfleet.store.journal import JournalEntry

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext
    from chainfleet.chain.progress import Chain

__all__ = ["STAGE", "UPSTREAM_LIMITS", "Answer", "Gateway", "ItemScope", "Outgoing"]

#: the upstream connection pool: the openai and anthropic SDKs' own (httpx's default, 100
#: connections, held every item's calls of a run at -c 200 to 100 at a time: 400 calls of 1 s
#: on the sim-server took 16.8 s with it, 9.8 s with this)
UPSTREAM_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)

#: the stage label of the calls made in this task (``with fleet.stage(...)``; None: none set)
STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("chainfleet_stage", default=None)


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


@dataclass(eq=False)
class Outgoing:
    """One call being made for an item: the request, what it is, its journal key, and what
    came back (``answer``: "ok" or the last "error"). A stream's ``head`` is where the caller
    gets the answer as it arrives; ``cut`` is told when a stream breaks midway."""

    request: httpx.Request
    body: bytes
    target: Target
    label: str
    digest: str
    occurrence: int
    answer: dict[str, Answer] = field(default_factory=dict)
    head: asyncio.Future[httpx.Response] | None = None
    cut: Callable[[CallError], None] | None = None


@dataclass(frozen=True)
class Answer:
    """What the provider answered to one attempt (the body read whole and decoded); a
    non-streamed answer keeps its ``response`` too, to be handed to the caller as it is."""

    status: int
    headers: httpx.Headers
    content: bytes
    response: httpx.Response | None = None


class Gateway:
    """Sends the calls of one run's code chains; see the module docstring."""

    def __init__(self, ctx: RunContext, upstream: httpx.AsyncBaseTransport | None = None) -> None:
        self.ctx = ctx
        self.calls = Calls(ctx)
        #: ``--model``: (provider, model) the calls of that provider's API are sent to
        self.model = ctx.pipeline.model_override
        self._upstream = upstream
        self._client: httpx.AsyncClient | None = None
        #: the SDK clients ``fleet.openai()`` / ``fleet.anthropic()`` made, by their arguments
        self.clients: dict[Any, Any] = {}
        #: streamed calls still being read (a task each; kept so none is collected midway)
        self._tasks: set[asyncio.Future[None]] = set()

    @property
    def upstream(self) -> httpx.AsyncBaseTransport:
        """The transport the real requests go out on (made on first use), with the pool the
        official SDKs give their own clients (:data:`UPSTREAM_LIMITS`)."""
        if self._upstream is None:
            self._upstream = httpx.AsyncHTTPTransport(limits=UPSTREAM_LIMITS)
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
        if self.model is not None:
            request, body = self._overridden(request, path, body)
        value = decode_json(body)  # once: for the journal's key and for the target
        digest = request_hash(request.method, path, body, value)
        occurrence = scope.occurrence(digest)
        found = self.ctx.store.journal.get(self.ctx.run_id, scope.chain.item.index, digest, occurrence)
        if found is not None:
            scope.replayed += 1
            self.ctx.stats.replayed += 1
            if self.ctx.tracer.on:
                target = read_target(path, body, value)
                self.ctx.tracer.reused(scope.chain, scope.label(target, path), target.model, "journal")
            return complete(found.status, found.headers, found.body, request)
        target = read_target(path, body, value)
        if target.provider is None:
            self.ctx.passthrough[path] = self.ctx.passthrough.get(path, 0) + 1
        out = Outgoing(request, body, target, scope.label(target, path), digest, occurrence)
        if self._unpriced(target):
            budget = self.ctx.settings.max_cost
            error = UnpricedModel(
                f"a cost budget (${budget:g}) cannot be enforced: no price is known for "
                f"{target.spec!r}, so the call was not made; give --prices FILE (model -> "
                "{input, output} USD per million tokens)"
            )
            return self._failed(scope, error, out)
        if target.stream:
            return await self._streamed(scope, out)
        try:
            called = await self._make(scope, out)
        except CallError as exc:
            return self._failed(scope, exc, out)
        ok = out.answer["ok"]
        headers = kept(ok.headers)
        await self._journal(scope, out, called, headers)
        if ok.response is None:
            return complete(ok.status, headers, ok.content, request)
        return handed(ok.response, headers, request)

    def _overridden(self, request: httpx.Request, path: str, body: bytes) -> tuple[httpx.Request, bytes]:
        """``--model`` on the user's own chain: a call of that provider's API is sent to that
        model (the journal keys the call as sent, so changing ``--model`` calls again)."""
        assert self.model is not None
        provider, name = self.model
        value = decode_json(body)
        if read_target(path, body, value).provider != provider or not isinstance(value, dict):
            return request, body
        if value.get("model") == name:
            return request, body
        value["model"] = name
        body = json.dumps(value, ensure_ascii=False).encode()
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
        changed = httpx.Request(
            request.method, request.url, headers=headers, content=body, extensions=request.extensions
        )
        return changed, body

    def _unpriced(self, target: Target) -> bool:
        """Whether a cost budget is set and ``target``'s model has no price (it cannot hold)."""
        if self.ctx.settings.max_cost is None or target.spec is None:
            return False
        return self.ctx.spend.price(target.spec) is None

    async def _streamed(self, scope: ItemScope, out: Outgoing) -> httpx.Response:
        """A streamed call: the caller gets the answer as it arrives, while the call goes on in
        a task of its own that reads it whole, settles its tokens and journals it."""
        out.head = asyncio.get_running_loop().create_future()

        def cut(error: CallError) -> None:
            scope.failure = error

        out.cut = cut

        async def make() -> None:
            assert out.head is not None
            try:
                called = await self._make(scope, out)
            except CallError as exc:
                if out.head.done():  # cut mid-stream: the caller's read fails
                    scope.failure = exc
                    return
                try:
                    out.head.set_result(self._failed(scope, exc, out))
                except CallError as raised:
                    out.head.set_exception(raised)
                return
            await self._journal(scope, out, called)

        task = asyncio.ensure_future(make())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        either: list[asyncio.Future[Any]] = [out.head, task]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not out.head.done():
            task.result()  # the gateway's own bug: raise it
        return await out.head

    async def _make(self, scope: ItemScope, out: Outgoing) -> Called:
        """The call through :meth:`Calls.attempts`: the model's limiter (none for an unknown
        path), the retry policy, the calls table, the price."""
        spec = out.target.spec
        limiter = self.ctx.limits.of(spec) if spec is not None else None

        async def call(record: Attempt) -> tuple[str, int, int]:
            record.provider, record.model = out.target.provider or out.request.url.host, out.target.model

            async def send() -> Completion:
                return await self._attempt(out)

            completion = await self.calls.metered(limiter, out.target.estimate, record, send)
            return "", completion.input_tokens, completion.output_tokens

        prepared = Prepared(call=call, key_parts=(), spec=spec, gated=limiter is not None)
        scope.called += 1
        stats = self.ctx.stats.stage(out.label)
        stats.in_flight += 1
        try:
            return await self.calls.attempts(scope.chain, out.label, prepared, stats)
        finally:
            stats.in_flight -= 1

    async def _attempt(self, out: Outgoing) -> Completion:
        """One attempt upstream; an error answer or a failed connection raises a
        ``CallError``. A stream's success is passed through as it comes.

        The request itself goes out, attempt after attempt: :meth:`send` read its body whole,
        which leaves it a replayable ``ByteStream`` (a copy per attempt cost more CPU than the
        journal's write)."""
        request = out.request
        name = out.target.provider or request.url.host
        out.answer.pop("error", None)  # an earlier attempt's error answer is not this one's
        try:
            response = await self.upstream.handle_async_request(request)
            if out.head is not None and out.cut is not None and response.status_code < 400:
                content = await pass_through(response, out.head, request, out.cut, name)
            else:
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
                scrub_secret(message or content[:200].decode("utf-8", "replace"), _key_of(request)),
                code=code,
                kind=kind,
                headers=response.headers,
                provider=name,
            )
            out.answer["error"] = Answer(response.status_code, response.headers, content)
            raise error
        whole = response if out.head is None else None  # a stream was passed on as it came
        out.answer["ok"] = Answer(response.status_code, response.headers, content, whole)
        usage = usage_of(content, stream=out.target.stream)
        return Completion(
            text="",
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            headers=dict(response.headers),
        )

    async def _journal(
        self, scope: ItemScope, out: Outgoing, called: Called, headers: dict[str, str] | None = None
    ) -> None:
        """Keep the answer in the journal, durable before the caller goes on (``headers``:
        its :func:`kept` headers, when the caller already has them)."""
        ok = out.answer["ok"]
        entry = JournalEntry(
            out.digest,
            out.occurrence,
            "http",
            ok.status,
            ok.content,
            kept(ok.headers) if headers is None else headers,
            out.label,
            called.input_tokens,
            called.output_tokens,
        )
        self.ctx.store.journal.put(self.ctx.run_id, scope.chain.item.index, entry)
        await self.ctx.store.durable()

    def _failed(self, scope: ItemScope, exc: CallError, out: Outgoing) -> httpx.Response:
        """A call that failed for good: remembered on the scope (and a fatal one stops the run);
        the provider's last error answer goes back to the caller, else the error is raised."""
        exc.item_id = scope.chain.item.id
        scope.failure = exc
        if isinstance(exc, FatalError) and out.target.provider is not None:
            # only a call chainfleet can read stops the run: a 404 from a path it cannot read
            # (GET /v1/models) is that path's answer to its caller, not a model that is gone
            self.ctx.state.fail(exc)
        answer = out.answer.get("error")
        if answer is None:
            raise exc
        return complete(answer.status, kept(answer.headers), answer.content, out.request)


def _key_of(request: httpx.Request) -> str | None:
    """The API key the request carries (OpenAI's bearer token, Anthropic's ``x-api-key``), so
    an error message that echoes it is scrubbed before it is kept anywhere."""
    bearer = request.headers.get("authorization", "")
    if bearer.lower().startswith("bearer "):
        return bearer[7:].strip() or None
    return request.headers.get("x-api-key") or request.headers.get("api-key")
