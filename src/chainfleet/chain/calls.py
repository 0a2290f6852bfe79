"""One call made ready and attempted: through its model's limiter, with the retry policy,
counted, recorded in the store and priced.

The stage code (:mod:`chainfleet.chain.stage`) decides *what* to ask; :class:`Calls` makes the
request go: an attempt waits for the model's limiter (or goes into a provider batch), calls the
provider, and on a ``CallError`` the retry policy decides whether to wait and try again. Every
attempt is a row in the store's calls table (the timeline and the report are built from it); a
429 closes the model's cooldown gate; the tokens are priced as they arrive. When the model is a
route's name, each attempt goes to the target the route chooses (:mod:`chainfleet.chain.routes`),
through that target's own limiter, and is priced as that target's model.

Example::

    prepared = calls.prepare("openai:gpt-4o-mini", request, key_parts)
    called = await calls.attempts(chain, "research", prepared, ctx.stats.stage("research"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chainfleet.chain.progress import Chain
from chainfleet.chain.usercode import ToolError, call_user
from chainfleet.errors import CallError, RetryableError
from chainfleet.limits import ModelLimiter, Reservation, estimate_tokens
from chainfleet.limits.headers import parse_rate_limits
from chainfleet.pipeline import Stage
from chainfleet.providers import Completion, CompletionRequest, Provider, ToolCall
from chainfleet.store.runstore import CallRow
from chainfleet.store.stats import StageStats
from chainfleet.trace import AttemptInfo

if TYPE_CHECKING:
    from chainfleet.chain.batch import BatchCalls
    from chainfleet.chain.context import RunContext
    from chainfleet.chain.routes import Route

__all__ = ["Attempt", "Called", "Calls", "Prepared", "ToolError", "repair_note", "request_key"]

#: what one attempt gives back: (text, input tokens, output tokens)
Call = tuple[str, int, int]


@dataclass
class Attempt:
    """One attempt's timing: queued (asked), started (the provider call began), waits."""

    number: int
    queued: float
    started: float
    limiter_wait: float = 0.0
    cooldown_wait: float = 0.0
    #: the tools the model asked to call in this attempt's reply (an agent's turn)
    tool_calls: tuple[ToolCall, ...] = ()
    #: (item id, stage label): what a route pins to one target
    pin: tuple[str, str] | None = None
    #: the model the attempt was priced as, when a route chose it (else the call's spec)
    spec: str | None = None
    #: what the attempt asked of whom and what came back, for the tracer (chainfleet.trace)
    provider: str | None = None
    model: str | None = None
    request: CompletionRequest | None = None
    response_model: str | None = None
    finish_reason: str | None = None


@dataclass
class Called:
    """A call's text after its attempts, with the tokens and service time they took."""

    text: str
    input_tokens: int
    output_tokens: int
    seconds: float
    attempts: int
    #: the tools the model asked to call (an agent's turn)
    tool_calls: tuple[ToolCall, ...] = ()

    def add(self, more: Called) -> None:
        self.text = more.text
        self.input_tokens += more.input_tokens
        self.output_tokens += more.output_tokens
        self.seconds += more.seconds
        self.attempts += more.attempts


@dataclass
class Prepared:
    """A call made ready for one item: how to attempt it, how to ask again to repair it, and
    (made on demand: it costs a hash of the whole prompt) the key of its input."""

    call: Callable[[Attempt], Awaitable[Call]]
    key_parts: tuple[Any, ...]
    spec: str | None = None
    gated: bool = False
    cacheable: bool = False
    #: the same call with the validator's message appended (None: cannot be asked again)
    repair: Callable[[str, str], Prepared] | None = None
    #: the request a model call sends (None for a tool step); an agent builds its turns on it
    request: CompletionRequest | None = None
    _key: str | None = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = request_key(*self.key_parts)
        return self._key


#: what ``json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)`` makes for each
#: call (the same text: the key's form never moves), made once rather than once a call
_KEY_JSON = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False)


def request_key(*parts: object) -> str:
    """The key of a stage's input: same key, same request, same result to reuse."""
    data = _KEY_JSON.encode(parts)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def repair_note(problem: str, reply: str) -> str:
    """What a repair call adds to the prompt: the reply and what was wrong with it."""
    return (
        f"\n\nYour previous reply was not valid: {problem}.\nPrevious reply:\n{reply[:2000]}\n"
        "Reply again with only the corrected JSON value."
    )


class Calls:
    """Makes the calls of one run: see the module docstring."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    async def attempts(self, chain: Chain, label: str, prepared: Prepared, stats: StageStats) -> Called:
        """Attempt one call until it succeeds or the retry policy gives up (then raise)."""
        attempt = 0
        service = 0.0
        while True:
            attempt += 1
            chain.attempts += 1
            self.ctx.stats.calls += 1
            stats.calls += 1
            now = self.ctx.clock.now()
            record = Attempt(number=attempt, queued=now, started=now)
            try:
                text, tokens_in, tokens_out = await prepared.call(record)
            except CallError as exc:
                service += self._count_attempt(chain, stats, record, ok=False)
                if exc.kind == "rate_limited":
                    self.ctx.stats.rate_limited += 1
                retrying = self.ctx.retry.should_retry(exc, attempt) and not self.ctx.halted
                wait = 0.0
                if retrying and not (exc.kind == "rate_limited" and prepared.gated):
                    # (else the cooldown gate waits)
                    wait = self.ctx.retry.wait(exc, attempt, self.ctx.rng)
                self._save_call(chain, label, record, exc.kind, backoff=wait, error=str(exc))
                if self.ctx.tracer.on:
                    self._trace(chain, label, record, error=exc, backoff=wait)
                if not retrying:
                    raise
                self.ctx.stats.calls_retried += 1
                if wait:
                    self.ctx.stats.backoff_seconds += wait
                    await self.ctx.clock.sleep(wait)
                continue
            service += self._count_attempt(chain, stats, record, ok=True)
            self._save_call(chain, label, record, "ok", tokens=(tokens_in, tokens_out))
            if self.ctx.tracer.on:
                self._trace(chain, label, record, tokens=(tokens_in, tokens_out), text=text)
            self.spend(record.spec or prepared.spec, tokens_in, tokens_out)
            return Called(text, tokens_in, tokens_out, service, attempt, record.tool_calls)

    def _trace(
        self,
        chain: Chain,
        label: str,
        record: Attempt,
        *,
        error: CallError | None = None,
        backoff: float = 0.0,
        tokens: tuple[int, int] = (0, 0),
        text: str | None = None,
    ) -> None:
        """Tell the tracer how the attempt went (tracing on only: see chainfleet.trace)."""
        request = record.request
        tracer = self.ctx.tracer
        if record.provider is None:  # a tool step (a plain function): no model was called
            ok = error is None
            tracer.tool(chain, label, "", record.started, self.ctx.clock.now(), error=not ok)
            return
        tracer.attempt(
            chain,
            AttemptInfo(
                label=label,
                number=record.number,
                queued=record.queued,
                started=record.started,
                ended=self.ctx.clock.now(),
                limiter_wait=record.limiter_wait,
                cooldown_wait=record.cooldown_wait,
                backoff=backoff,
                provider=record.provider,
                model=record.model,
                response_model=record.response_model,
                max_tokens=request.max_tokens if request is not None else None,
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                finish_reason=record.finish_reason,
                error=error.kind if error is not None else None,
                error_message=str(error) if error is not None else None,
                messages=request.conversation() if tracer.content and request is not None else (),
                reply=text if tracer.content and request is not None else None,
            ),
        )

    def spend(self, spec: str | None, tokens_in: int, tokens_out: int) -> None:
        self.ctx.stats.input_tokens += tokens_in
        self.ctx.stats.output_tokens += tokens_out
        self.ctx.spend.add(spec, tokens_in, tokens_out)

    def _save_call(
        self,
        chain: Chain,
        label: str,
        record: Attempt,
        status: str,
        *,
        backoff: float = 0.0,
        tokens: tuple[int, int] = (0, 0),
        error: str | None = None,
    ) -> None:
        t0 = self.ctx.t0
        self.ctx.store.save_call(
            self.ctx.run_id,
            CallRow(
                index=chain.item.index,
                item_id=chain.item.id,
                stage=label,
                attempt=record.number,
                queued=record.queued - t0,
                started=record.started - t0,
                ended=self.ctx.clock.now() - t0,
                status=status,
                limiter_wait=record.limiter_wait,
                cooldown_wait=record.cooldown_wait,
                backoff=backoff,
                input_tokens=tokens[0],
                output_tokens=tokens[1],
                error=error,
            ),
        )

    def prepare(
        self,
        spec: str,
        request: CompletionRequest,
        key_parts: tuple[Any, ...],
        batch: BatchCalls | None = None,
    ) -> Prepared:
        """A request made ready: an attempt goes through the model's limiter and the adaptive
        gate; a 429 closes the model's cooldown gate. In batch mode (``batch``, see
        chainfleet.chain.batch) it goes into a provider batch job instead: no limiter (a batch API
        has limits of its own), and the batch price."""
        provider, model = self.ctx.pool.for_model(spec)
        caller = batch(key_parts) if batch is not None else None
        route = self.ctx.route(spec) if caller is None else None
        sent = "".join(str(m.get("content") or "") for m in request.conversation())
        estimate = estimate_tokens(sent, model) + request.max_tokens

        if route is not None:

            async def call(record: Attempt) -> Call:
                return await self.routed(route, request, record, estimate)

            cacheable = all(t.provider.kind != "sim" for t in route.targets)
        else:
            limiter = self.ctx.limits.of(spec) if caller is None else None

            async def call(record: Attempt) -> Call:
                return await self.attempt(provider, request, record, estimate, limiter, caller)

            # the response cache: real providers only (sim must take its time), deterministic requests
            cacheable = provider.kind != "sim"

        def repair(problem: str, reply: str) -> Prepared:
            again = dataclasses.replace(request, prompt=request.prompt + repair_note(problem, reply))
            return self.prepare(spec, again, (*key_parts, ("repair", problem)), batch)

        return Prepared(
            call=call,
            key_parts=key_parts,
            spec=spec if caller is None else f"{spec}@batch",
            gated=caller is None and (route is not None or self.ctx.limits.of(spec) is not None),
            cacheable=cacheable and request.temperature == 0,
            repair=repair if request.schema is not None else None,
            request=request,
        )

    async def routed(self, route: Route, request: CompletionRequest, record: Attempt, estimate: int) -> Call:
        """One attempt on a route: on the target it chooses, and at once on the next when that
        one goes out of service (a refused key, a dead endpoint, a streak of failures)."""
        tried: set[int] = set()
        while True:
            target = route.choose(record.pin, estimate, frozenset(tried))
            assert target is not None  # a target is tried only while another is left (below)
            record.spec = target.spec
            asked = dataclasses.replace(request, model=target.model)
            try:
                text, tokens_in, tokens_out = await self.attempt(
                    target.provider, asked, record, estimate, target.limiter, None
                )
            except CallError as exc:
                tried.add(target.index)
                out = route.failed(target, exc)
                if not out or len(tried) == len(route.targets):
                    raise
                continue
            except BaseException:
                route.released(target)
                raise
            route.succeeded(target, tokens_in, tokens_out)
            return text, tokens_in, tokens_out

    async def attempt(
        self,
        provider: Provider,
        request: CompletionRequest,
        record: Attempt,
        estimate: int,
        limiter: ModelLimiter | None,
        caller: Callable[[CompletionRequest], Awaitable[Completion]] | None,
    ) -> Call:
        """One attempt on one provider (through a batch job with ``caller``): :meth:`metered`,
        and the tool calls the reply asks for kept on the record."""

        async def send() -> Completion:
            return await (provider.complete(request) if caller is None else caller(request))

        endpoint = endpoint_of(provider) if caller is None else None  # a batch job has its own watcher
        record.provider, record.model, record.request = provider.kind, request.model, request
        completion = await self.metered(limiter, estimate, record, send, endpoint=endpoint)
        record.tool_calls = completion.tool_calls
        return completion.text, completion.input_tokens, completion.output_tokens

    async def metered(
        self,
        limiter: ModelLimiter | None,
        estimate: int,
        record: Attempt,
        send: Callable[[], Awaitable[Completion]],
        *,
        endpoint: str | None = None,
    ) -> Completion:
        """One attempt through ``limiter`` (None: unmetered): wait for ``estimate`` tokens, make
        the call with ``send``, tell the adaptive gate how it went, learn the limits from the
        headers and settle the tokens really used. A 429 closes the cooldown gate; a streak of
        connection failures to ``endpoint`` stops the run (:mod:`chainfleet.limits.health`). The
        user's own chains (:mod:`chainfleet.code.gateway`) send their HTTP requests through here too."""
        health = self.ctx.health if endpoint is not None else None
        reservation = None
        if limiter is not None:
            reservation = await limiter.acquire(estimate)
            record.limiter_wait += reservation.limiter_wait  # (a route may try two targets)
            record.cooldown_wait += reservation.cooldown_wait
            self.ctx.stats.limiter_seconds += reservation.limiter_wait
            self.ctx.stats.cooldown_seconds += reservation.cooldown_wait
        record.started = started = self.ctx.clock.now()
        try:
            completion = await send()
        except CallError as exc:
            down = health.failed(endpoint, exc) if health is not None and endpoint is not None else None
            if self.ctx.adaptive is not None:
                busy = exc.kind in ("rate_limited", "overloaded")
                await self.ctx.adaptive.observe(ok=False, overloaded=busy, latency=None)
            if limiter is not None and reservation is not None:
                self._refused_or_failed(limiter, reservation, exc, record.number)
            if down is not None:
                raise down from exc
            raise
        except BaseException:  # cancelled: a slow-start probe must not hold the others
            if limiter is not None and reservation is not None:
                limiter.failed(reservation)
            raise
        if health is not None and endpoint is not None:
            health.ok(endpoint)
        if self.ctx.adaptive is not None:
            latency = self.ctx.clock.now() - started
            await self.ctx.adaptive.observe(ok=True, overloaded=False, latency=latency)
        if limiter is not None and reservation is not None:
            limiter.observe(parse_rate_limits(completion.headers, time.time()))
            limiter.settle(reservation, completion.input_tokens + completion.output_tokens)
        self.ctx.stats.cached_tokens += completion.cached_tokens
        record.response_model, record.finish_reason = completion.model, completion.finish_reason
        return completion

    def _refused_or_failed(
        self, limiter: ModelLimiter, reservation: Reservation, exc: CallError, attempt: int
    ) -> None:
        """A 429 closes the model's cooldown gate (and gives its tokens back); anything else
        only frees the call's place (a slow-start probe lets the others go)."""
        if exc.kind != "rate_limited":
            limiter.failed(reservation)
            return
        wait = exc.retry_after if isinstance(exc, RetryableError) else None
        if wait is None:
            wait = self.ctx.retry.backoff(attempt, self.ctx.rng)
        limiter.refused(reservation, wait)

    async def _tool(self, stage: Stage, context: Mapping[str, Any]) -> str:
        result = await call_user(stage.tool, context, stage=stage.name, error=ToolError)
        if not isinstance(result, str):
            raise ToolError(f"tool returned {type(result).__name__}, not str", stage=stage.name)
        return result

    def _count_attempt(self, chain: Chain, stats: Any, record: Attempt, *, ok: bool) -> float:
        """Count one attempt; its service time runs from the call's start, after any wait for
        the limiter (so ``sequential_seconds`` is the calls' own time)."""
        elapsed = self.ctx.clock.now() - record.started
        chain.seconds += elapsed
        stats.seconds.append(elapsed)
        self.ctx.stats.service_seconds += elapsed
        if ok:
            self.ctx.stats.calls_succeeded += 1
        else:
            self.ctx.stats.calls_failed += 1
            stats.failed += 1
        return elapsed

    def tool_call(self, stage: Stage, context: Mapping[str, Any]) -> Prepared:
        tool = stage.tool
        name = f"{getattr(tool, '__module__', '')}.{getattr(tool, '__qualname__', repr(tool))}"

        async def call(record: Attempt) -> Call:
            return await self._tool(stage, context), 0, 0

        return Prepared(call=call, key_parts=(stage.name, "tool", name, dict(context)))


#: where the official SDKs send calls when no base URL is given
OFFICIAL_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}


def endpoint_of(provider: Provider) -> str:
    """The URL a provider's calls go to (its base URL, else its kind's official one)."""
    url = getattr(provider, "base_url", None)
    return str(url) if url else OFFICIAL_URLS.get(provider.kind, f"the {provider.kind} provider")
