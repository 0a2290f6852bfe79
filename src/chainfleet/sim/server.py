"""``chainfleet sim-server``: the simulated model behind the OpenAI and Anthropic wire formats.

A real HTTP server (aiohttp) that answers ``POST /v1/chat/completions`` and ``POST
/v1/responses`` like OpenAI and ``POST /v1/messages`` like Anthropic, with text from
:func:`chainfleet.sim.text.generate`, tool calls when it plays agent, and server-sent events
when asked to stream. The official SDKs (and the OpenAI Agents SDK) talk to it unchanged
(``base_url`` pointed at it), so adapters are tested over real HTTP, and users can rehearse a
batch offline against their tier's limits before paying for it.

This module is the server itself: the app and its routes, the order in which a request meets
the rules, and starting and stopping it (in this event loop, :class:`SimServer`; on a thread of
its own, :class:`SimServerThread`; until Ctrl-C, :func:`run_server`). The rules are its parts:

- :mod:`~chainfleet.sim.settings`: what it is told; :mod:`~chainfleet.sim.stats`: what it counts;
- :mod:`~chainfleet.sim.wire`: the formats (keys, bodies, answers, errors as each provider
  words them; :mod:`~chainfleet.sim.responses` for ``/v1/responses``, conversations read by
  :mod:`~chainfleet.sim.messages`, streams cut by :mod:`~chainfleet.sim.stream`), over
  :mod:`~chainfleet.sim.call` (one request, and the failures it can meet);
- :mod:`~chainfleet.sim.agent`: which tools the model calls, and its answer after them;
- :mod:`~chainfleet.sim.limits`: ``rpm`` and ``tpm`` as token buckets (:mod:`~chainfleet.sim.bucket`)
  or sliding windows (:mod:`~chainfleet.sim.window`), and the rate-limit headers;
- :mod:`~chainfleet.sim.faults`: ``[[sim:...]]`` prompt triggers and seeded random faults;
- :mod:`~chainfleet.sim.queue`: N slots, the other requests waiting in line (``slots``);
- :mod:`~chainfleet.sim.batch`: the batch APIs; :mod:`~chainfleet.sim.admin`: the ``/sim`` routes.

None of them imports this module: the batch jobs get the server as a
:class:`~chainfleet.sim.batch.Host` (its settings, counts and answers).

What it does to a request, in order, on all three routes (each step answers at once and
stops there; errors on ``/v1/responses`` are OpenAI's, in its shape):

1. auth (401), ``anthropic-version`` (400), the body (OpenAI 422, Anthropic 400; a tool call,
   tool result or tool definition of the wrong shape too, naming its place; a request the real
   API refuses, such as an unknown ``tool_choice`` function or a ``previous_response_id``, 400),
   the model (404), the context window (400: P + max_tokens above 128,000 on OpenAI, 200,000
   on Anthropic): nothing here is counted against the limits;
2. ``max_in_flight``: above it, 503 "server busy", like an Ollama or vLLM queue;
3. quota (``quota_tokens`` spent or ``[[sim:quota]]``), ``[[sim:429]]``, "Request too large"
   (one request above ``tpm``), then the rate limits: a 429 here is never charged;
4. admitted: one request and ``P + max_tokens`` tokens are charged to the limits;
5. faults: a ``[[sim:...]]`` trigger in the prompt, else one seeded draw against the fault
   rates. A failed call keeps its request slot and gets its tokens back (it generated
   nothing); a slow one sleeps ``slow_seconds`` and goes on;
6. ``latency`` plus up to ``jitter`` seconds, then the answer; the token charge is corrected to
   the real usage ``P + C``. With ``slots`` set that service time, or a slow call's, is spent
   holding one of N slots: others wait in line. A streamed answer (``stream: true``) pays the
   same latency before its first byte, then its events go out at once (chunked
   ``text/event-stream``); an error is never streamed: it is the same JSON as unstreamed.

The answer (:meth:`SimServer.respond`):

- with tools (and ``tool_choice`` not none; Anthropic's forced ``tool_choice`` means structured
  output, below) the simulated model plays agent (:mod:`chainfleet.sim.agent`): one to three
  turns of tool calls (``[[sim:tool_turns=N]]`` in the prompt sets N), one or two parallel calls
  a turn (one with ``parallel_tool_calls: false``), deterministic in the seed and the
  conversation; OpenAI ``tool_choice: required`` or a named function always calls. Then it
  answers with text that quotes each tool result, a failed one as failed;
- otherwise (:meth:`SimServer.reply`) ``simtext.generate(prompt, system=system, seed=seed,
  max_tokens=max_tokens, model=model)``, or for a request for structured output (OpenAI
  ``response_format`` or Responses ``text.format``, Anthropic ``tools`` with a forced
  ``tool_choice``, or a prompt carrying the schema) JSON from :mod:`chainfleet.sim.jsonvalue`
  (see :mod:`chainfleet.sim.structured`); with ``invalid_output_rate`` a deterministic share of
  those replies break their schema.

P = ``count_tokens(system) + count_tokens(prompt)`` (plus the tool definitions as JSON), C =
``count_tokens(text)`` or, for tool calls, of each call's name and arguments.

Routes: the three above, ``POST /v1/embeddings`` (:mod:`chainfleet.sim.embeddings`: vectors,
the same rules, P tokens charged and none generated), the batch APIs (their requests answered
as online, tool calls included), ``GET /health``, and the admin routes ``GET /sim/stats``
(``tool_calls`` and ``streamed`` among its counts), ``POST /sim/reset`` and ``POST
/sim/config`` (a JSON object of settings), the same under ``/sim/batch``.

Example::

    async with SimServer(SimServerSettings(rpm=60)) as sim:
        client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="sim", max_retries=0)
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Research tea."}]
        )
        answer = await client.responses.create(model="gpt-4o-mini", input="Research tea.")
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.payload import AsyncIterablePayload

from chainfleet.sim import agent
from chainfleet.sim import text as simtext
from chainfleet.sim.admin import add_admin_routes, admin_guard
from chainfleet.sim.batch import BatchSim, BatchSimSettings
from chainfleet.sim.call import Call, Failure, Reply
from chainfleet.sim.embeddings import EmbeddingCall, Embeddings
from chainfleet.sim.faults import Faults, check_quota, malformed_body, prompt_trigger
from chainfleet.sim.limits import RATE_LIMITED, RateLimits, Reservation
from chainfleet.sim.queue import SlotQueue
from chainfleet.sim.responses import Responses
from chainfleet.sim.settings import SimServerSettings
from chainfleet.sim.stats import Stats
from chainfleet.sim.structured import is_invalid
from chainfleet.sim.wire import Anthropic, Dialect, OpenAI

__all__ = ["SimServer", "SimServerThread", "run_server"]

T = TypeVar("T")

#: ``tool_turns`` for a turn that must call a tool (OpenAI ``tool_choice`` required or named)
_ALWAYS = 2**31
#: a stream goes out in writes of this many events: a few chunks show a client a stream
#: arriving in parts, without a write (and a chunk header) per event
_EVENTS_PER_WRITE = 16


@functools.lru_cache(maxsize=4096)
def _generate(prompt: str, system: str | None, seed: int, max_tokens: int, model: str) -> str:
    """``simtext.generate``, memoized: it is pure, and benchmarks repeat prompts."""
    return simtext.generate(prompt, system=system, seed=seed, max_tokens=max_tokens, model=model)


# --- the server ---------------------------------------------------------------------------------


class SimServer:
    """The sim server in this event loop: :meth:`start` it, point SDKs at :attr:`url`, :meth:`stop`.

    ``clock`` (monotonic seconds) drives the rate-limit buckets. State lives on this object, so
    ``/sim/stats`` and :meth:`stats` agree.

    Example::

        async with SimServer(SimServerSettings(rpm=60, error_rate=0.1)) as sim:
            print(sim.url)          # http://127.0.0.1:PORT
            print(sim.stats()["calls"])
    """

    def __init__(
        self,
        settings: SimServerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        batch: BatchSimSettings | None = None,
    ) -> None:
        #: the batch APIs (OpenAI Files + Batches, Anthropic Message Batches): sim.batch
        self.batch = BatchSim(self, batch)
        self._settings = settings or SimServerSettings()
        self._faults = Faults(self._settings.seed)
        self._limits = RateLimits(
            self._settings.rpm,
            self._settings.tpm,
            window=self._settings.window,
            bucket_seconds=self._settings.bucket_seconds,
            clock=clock,
        )
        self._numbers = itertools.count(1)
        self._in_flight = 0
        self._queue = SlotQueue(self._settings.slots, clock=clock)
        self._stats = Stats()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- public surface

    @property
    def settings(self) -> SimServerSettings:
        return self._settings

    @property
    def counts(self) -> Stats:
        """The counts ``/sim/stats`` reports (a new object after each :meth:`reset`)."""
        return self._stats

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (OpenAI clients add ``/v1``)."""
        if self._url is None:
            raise RuntimeError("the sim server is not started")
        return self._url

    def configure(self, **changes: Any) -> SimServerSettings:
        """Replace some settings (validated; pydantic's ``ValidationError`` on a bad one).

        A changed ``rpm`` or ``tpm`` starts a new, full bucket; a changed ``seed`` reseeds the
        fault draws.
        """
        old = self._settings
        new = SimServerSettings.model_validate({**old.model_dump(), **changes})
        self._settings = new
        self._limits.change(new.rpm, new.tpm, new.window, new.bucket_seconds)
        if new.seed != old.seed:
            self._faults.reseed(new.seed)
        if new.slots != old.slots:
            self._queue.resize(new.slots)
        return new

    def reset(self) -> None:
        """Zero the stats, refill the buckets, reseed the fault draws, forget fail-once keys."""
        self._stats = Stats(self._in_flight)
        self._limits.refill()
        self._faults.reset(self._settings.seed)
        self._queue.reset_stats()
        self.batch.reset()

    def stats(self) -> dict[str, Any]:
        """Counts since the start or the last reset (the ``GET /sim/stats`` body)."""
        return self._stats.report(self._in_flight, self._queue.stats())

    def reply(self, call: Call) -> str:
        """The simulated model's reply to ``call``: prose, or JSON for a structured request.

        A pure function of the settings' seed and the call, but a structured reply is counted
        (``structured``, and ``invalid_output`` when it breaks its schema on purpose).
        """
        seed = self._settings.seed
        if call.ask is None:
            return _generate(call.prompt, call.system or None, seed, call.max_tokens, call.model)
        s = self._stats
        s.structured[call.ask.mode] += 1
        invalid = is_invalid(self._settings.invalid_output_rate, seed, call.system, call.prompt)
        if invalid:
            s.faults["invalid_output"] += 1
        prompt = f"{call.system}\n{call.prompt}" if call.system else call.prompt
        return call.ask.text(prompt, seed=seed, invalid=invalid)

    def respond(self, call: Call) -> Reply:
        """The simulated model's answer to ``call``: tool calls when it plays agent
        (:mod:`chainfleet.sim.agent`) and calls, else text (:meth:`reply`, or the agent's answer
        using the tool results). Tool calls are counted (``tool_calls``)."""
        talk, seed = call.talk, self._settings.seed
        if isinstance(call, EmbeddingCall):
            return Reply()  # vectors, generating no tokens (chainfleet.sim.embeddings)
        if not talk.plays_agent:
            return Reply(self.reply(call))
        calls = agent.next_turn(talk.messages, talk.tools, seed=seed)
        if not calls and talk.force:
            calls = agent.next_turn(talk.messages, talk.tools, seed=seed, tool_turns=_ALWAYS)
        if calls:
            calls = calls if talk.parallel else calls[:1]
            self._stats.tool_calls += len(calls)
            return Reply(calls=tuple(calls))
        if call.ask is not None:
            return Reply(self.reply(call))
        system = call.system or None
        text = agent.answer(
            talk.messages, seed=seed, max_tokens=call.max_tokens, model=call.model, system=system
        )
        return Reply(text)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port) and return the base URL."""
        if self._runner is not None:
            raise RuntimeError("the sim server is already started")
        # handler_cancellation: a request whose client went away (a timeout) stops being in flight
        runner = web.AppRunner(self._app(), access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0][1]
        self._url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
        return self._url

    async def stop(self) -> None:
        """Stop listening; requests still running are cancelled after a second."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- HTTP: one request, step by step

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 2**20, middlewares=[admin_guard])
        openai, anthropic, responses, embeddings = OpenAI(), Anthropic(), Responses(), Embeddings()

        async def chat(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, openai)

        async def messages(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, anthropic)

        async def respond(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, responses)

        async def embed(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, embeddings)

        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/v1/messages", messages)
        app.router.add_post("/v1/responses", respond)
        app.router.add_post("/v1/embeddings", embed)
        app.router.add_get("/health", self._health)
        self.batch.add_routes(app)
        add_admin_routes(app, "/sim", self)
        add_admin_routes(app, "/sim/batch", self.batch)
        return app

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _serve(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        """One completion request, start to finish, on either route."""
        self._stats.calls += 1
        self._stats.routes[request.path] += 1
        number = next(self._numbers)
        try:
            response = await self._answer(request, dialect, number)
        except Failure as failure:
            response = self._error_response(failure, dialect)
        if response is None:  # dropped: the client sees the connection close, no status
            self._stats.faults["dropped"] += 1
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        response.headers.update(dialect.id_headers(number))
        response.headers.update(dialect.limit_headers(self._limits))
        self._stats.status[str(response.status)] += 1
        return response

    def _error_response(self, failure: Failure, dialect: Dialect) -> web.Response:
        status, body = dialect.error(failure)
        response = web.json_response(body, status=status)
        if failure.retry_after is not None:
            response.headers.update(dialect.retry_headers(failure.retry_after))
        if failure.kind in RATE_LIMITED:
            self._stats.rate_limited += 1
        return response

    async def _answer(self, request: web.Request, dialect: Dialect, number: int) -> web.Response | None:
        """The answer to a completion request, a raised ``Failure``, or None to drop it."""
        call = await self._validated(request, dialect)
        limit = self._settings.max_in_flight
        if limit is not None and self._in_flight >= limit:
            raise Failure("busy", limit=limit)
        self._in_flight += 1
        self._stats.peak_in_flight = max(self._stats.peak_in_flight, self._in_flight)
        try:
            return await self._admitted(call, dialect, number)
        finally:
            self._in_flight -= 1

    async def _validated(self, request: web.Request, dialect: Dialect) -> Call:
        """Auth, headers, body, model and context window: failures here cost no limit."""
        dialect.authorize(request, self._settings.api_keys)
        call = dialect.read(await request.read())
        if self._settings.models and call.model not in self._settings.models:
            raise Failure("model_not_found", model=call.model)
        total = call.prompt_tokens + call.max_tokens
        if total > dialect.context_window:
            raise Failure(
                "context",
                window=dialect.context_window,
                total=total,
                prompt_tokens=call.prompt_tokens,
                max_tokens=call.max_tokens,
            )
        return call

    async def _admitted(self, call: Call, dialect: Dialect, number: int) -> web.Response | None:
        trigger = prompt_trigger(call.prompt)
        check_quota(trigger, self._stats.spent, self._settings.quota_tokens)
        if trigger == "429":
            raise Failure("rate_trigger", retry_after=1.0)
        reservation = self._limits.admit(call)
        try:
            fault = self._faults.fault(trigger, self._settings.fault_rates())
            if fault == "drop":
                return None
            if fault == "malformed":
                self._stats.faults["malformed"] += 1
                return web.Response(body=malformed_body(call, number), content_type="application/json")
            async with self._queue.slot():
                if fault == "slow":
                    self._stats.faults["slow"] += 1
                    await asyncio.sleep(self._settings.slow_seconds)
                await asyncio.sleep(self._faults.delay(self._settings.latency, self._settings.jitter))
            return self._success(call, dialect, number, reservation)
        finally:
            reservation.settle(0)  # a call that generated nothing gets its tokens back

    def _success(self, call: Call, dialect: Dialect, number: int, reservation: Reservation) -> web.Response:
        reply = self.respond(call)
        reservation.settle(call.prompt_tokens + reply.tokens)
        self._stats.completed(call, reply.tokens)
        body = dialect.answer(call, reply, number)
        if not call.stream:
            return web.json_response(body)
        self._stats.streamed += 1
        events = dialect.stream(call, body)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(events), _EVENTS_PER_WRITE):
                yield b"".join(events[start : start + _EVENTS_PER_WRITE])

        response = web.Response(body=AsyncIterablePayload(chunks()), headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"
        return response


# --- running it ---------------------------------------------------------------------------------


def run_server(
    settings: SimServerSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    ready: Callable[[str], None] | None = None,
    batch: BatchSimSettings | None = None,
) -> dict[str, Any]:
    """Serve until Ctrl-C or SIGTERM (blocking); return the final stats.

    ``ready`` is called with the base URL once the port is bound (port 0 picks a free one).
    """
    server = SimServer(settings, batch=batch)
    try:
        asyncio.run(_serve_until_signal(server, host, port, ready))
    except KeyboardInterrupt:  # where signal handlers are not available (Windows)
        pass
    return server.stats()


async def _serve_until_signal(
    server: SimServer, host: str, port: int, ready: Callable[[str], None] | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows, or not the main thread
            pass
    url = await server.start(host, port)
    try:
        if ready is not None:
            ready(url)
        await stop.wait()
    finally:
        await server.stop()


class SimServerThread:
    """A :class:`SimServer` on its own event loop in a daemon thread, for synchronous code.

    Tests and benchmarks call the SDKs from loops of their own; the server keeps answering
    whatever they do. Every method is safe to call from any thread.

    Example::

        with SimServerThread(SimServerSettings(rpm=60)) as sim:
            client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sim")
            ...
            sim.configure(error_rate=0.5)
            print(sim.stats()["status"])
    """

    def __init__(
        self, settings: SimServerSettings | None = None, *, batch: BatchSimSettings | None = None
    ) -> None:
        self.server = SimServer(settings, batch=batch)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def settings(self) -> SimServerSettings:
        return self.server.settings

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start the loop thread and the server on it; return the base URL."""
        if self._loop is not None:
            raise RuntimeError("the sim server thread is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="chainfleet-sim-server", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            return self._run(self.server.start(host, port))
        except BaseException:
            self._shutdown_loop()
            raise

    def stop(self) -> None:
        """Stop the server and the loop thread (a no-op when not started)."""
        if self._loop is None:
            return
        try:
            self._run(self.server.stop())
            self._run(self._loop.shutdown_default_executor())
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (its state belongs to that thread)."""
        if self._loop is None:
            return fn()

        async def call() -> T:
            return fn()

        return self._run(call())

    def configure(self, **changes: Any) -> SimServerSettings:
        return self._call(lambda: self.server.configure(**changes))

    def reset(self) -> None:
        self._call(self.server.reset)

    def stats(self) -> dict[str, Any]:
        return self._call(self.server.stats)

    def __enter__(self) -> SimServerThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
