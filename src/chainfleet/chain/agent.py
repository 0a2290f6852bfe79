"""An agent stage for one item: the model calls tools in a loop, every step durable.

A stage with ``tools:`` is an agent. :class:`AgentLoop` calls the model with the conversation so
far and the tools' definitions; when the reply asks for tool calls it runs them (at most the
stage's ``parallel_tools`` at once, each tool within its own ``concurrency``, ``timeout`` and
``retries``), appends their results and calls the model again, until the model answers without
a tool call. Every model turn is a call like a plain stage's (:class:`~chainfleet.chain.calls.Calls`:
the limiter, the retry policy, the calls table, prices).

What a tool does wrong goes back to the model as an error result, never fails the item: an
exception of the tool (through :func:`~chainfleet.chain.usercode.call_user`), a timeout, an
unknown tool name, arguments that break the tool's schema. The model may try again.

Budgets, per item: ``max_turns`` model turns, ``max_tool_calls`` tool calls and
``max_tokens_total`` tokens (sent and received, over all its turns: the turn that crosses it
is the last; its tool calls are not made, since no turn is left to read them). Reaching one
fails the item (:class:`MaxTurns`, naming the stage and the last tool asked for) or, with
``then: accept``, keeps the last answer. An answer that breaks the stage's ``output:`` contract
is sent back in the conversation with the validator's message (a repair, up to ``max_repairs``),
on a turn that offers no tools, so a provider that asks for structure with a forced tool
(Anthropic) can force its answer tool there.

Durable turns: each model turn and each tool result is stored the moment it completes
(:mod:`chainfleet.store.agent_turns`), keyed by the stage's input. A resumed or retried item
reads them back and continues where it stopped: a stored model turn is not asked again and a
stored tool result is not made again, so a tool with side effects acts once. A call in flight
at a kill may run again; its ``idempotency_key`` (item, stage, turn, call id) lets it tell.

How one item goes::

    model turn -> tool calls? -> run them (stored) -> model turn -> ... -> answer (checked)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pydantic

from chainfleet.chain.calls import Called, Calls, Prepared, repair_note
from chainfleet.chain.progress import Chain
from chainfleet.chain.usercode import ToolError, UserCodeError, call_user
from chainfleet.errors import InvalidOutput, PermanentError, RetryableError
from chainfleet.limits import ModelLimiter
from chainfleet.pipeline import Stage
from chainfleet.pipeline.tools import FunctionTool, ToolSettings
from chainfleet.redact import clip
from chainfleet.store.agent_turns import OPENING, AgentTurns, TurnRow
from chainfleet.store.stats import StageStats

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext

__all__ = ["AgentLoop", "MaxTurns", "Tool", "idempotency_key"]


class MaxTurns(PermanentError):
    """An agent reached its ``max_turns`` or ``max_tool_calls`` budget without answering."""

    kind = "max_turns"


class Tool(Protocol):
    """A tool an agent may call: a Python function here, or one an MCP server offers."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> ToolSettings: ...

    def definition(self) -> dict[str, Any]:
        """``{name, description, parameters}`` as the model is shown it."""

    async def invoke(self, arguments: Mapping[str, Any], key: str) -> tuple[str, bool]:
        """Run the call: (its result as text, whether it is an error). Raises
        ``pydantic.ValidationError`` for arguments that break the schema; anything else it
        raises becomes an error result too."""


@dataclass(frozen=True)
class PythonTool:
    """A ``function:`` tool: sync functions run in a worker thread, async ones on the loop."""

    tool: FunctionTool
    settings: ToolSettings

    @property
    def name(self) -> str:
        return self.tool.name

    def definition(self) -> dict[str, Any]:
        return self.tool.definition()

    async def invoke(self, arguments: Mapping[str, Any], key: str) -> tuple[str, bool]:
        kwargs = self.tool.bind(arguments, key)
        function = self.tool.function
        if inspect.iscoroutinefunction(function):
            result = await call_user(functools.partial(function, **kwargs), stage="", error=ToolError)
        else:
            call = functools.partial(asyncio.to_thread, function, **kwargs)
            result = await call_user(call, stage="", error=ToolError)
        return (result if isinstance(result, str) else json.dumps(result, default=str)), False


def idempotency_key(item_id: str, stage: str, turn: int, call_id: str) -> str:
    """The key a tool call is known by across a kill and a resume: (item, stage, turn, call id)."""
    return f"{item_id}/{stage}/{turn}/{call_id}"


@dataclass
class Conversation:
    """An item's agent conversation: the messages, where it stands, and what it has cost."""

    messages: list[dict[str, Any]]
    seq: int = 0
    turn: int = 0
    tool_calls: int = 0
    repairs: int = 0
    last_tool: str | None = None
    called: Called = field(default_factory=lambda: Called("", 0, 0, 0.0, 0))

    def replay(self, row: TurnRow) -> None:
        """Take one stored step back into the conversation."""
        self.messages.append(dict(row.message))
        self.seq = row.seq + 1
        if row.role == "assistant":
            self.turn = row.turn
            calls = row.message.get("tool_calls") or []
            self.tool_calls += len(calls)
            self.last_tool = calls[-1]["name"] if calls else self.last_tool
            self.called.input_tokens += row.input_tokens
            self.called.output_tokens += row.output_tokens
            self.called.text = str(row.message.get("content") or "")
        elif row.role == "user":
            self.repairs += 1

    def pending(self) -> list[dict[str, Any]]:
        """The last model turn's tool calls that have no result yet."""
        answered = set()
        for message in reversed(self.messages):
            if message.get("role") == "tool":
                answered.add(message.get("tool_call_id"))
            elif message.get("role") == "assistant":
                return [c for c in message.get("tool_calls") or [] if c["id"] not in answered]
        return []

    def answer(self) -> str | None:
        """The model's answer, when its last message is one without tool calls."""
        last = self.messages[-1]
        if last.get("role") == "assistant" and not last.get("tool_calls"):
            return str(last.get("content") or "")
        return None


class AgentLoop:
    """Runs the agent stages of one run: see the module docstring."""

    def __init__(self, ctx: RunContext, calls: Calls) -> None:
        self.ctx = ctx
        self.calls = calls
        self.turns = ctx.turn_writer or AgentTurns(ctx.store)
        #: each tool's own ``concurrency`` cap, shared by every item of the run
        self._slots: dict[str, asyncio.Semaphore] = {}
        #: and its ``rpm`` (the model limiter's buckets, told a rate)
        self._rates: dict[str, ModelLimiter] = {}
        self._tools: dict[str, dict[str, Tool]] = {}

    def tools_of(self, stage: Stage) -> dict[str, Tool]:
        """The stage's tools by name: its functions, then its MCP servers' tools."""
        if stage.name not in self._tools:
            found: dict[str, Tool] = {}
            for settings in stage.tools or ():
                if settings.function_tool is not None:
                    found[settings.function_tool.name] = PythonTool(settings.function_tool, settings)
            for tool in self.ctx.agent_tools.get(stage.name, ()):  # MCP servers' tools
                found.setdefault(tool.name, tool)
            self._tools[stage.name] = found
        return self._tools[stage.name]

    async def run(self, chain: Chain, stage: Stage, prepared: Prepared, stats: StageStats) -> Called:
        """The agent's final answer for one item (checked against the stage's contract), with
        the tokens and time of all its turns. Raises ``MaxTurns`` at a budget (unless ``then:
        accept``) and whatever fails a model turn."""
        assert prepared.request is not None, "an agent stage is a model call"
        convo = Conversation(messages=[dict(m) for m in prepared.request.conversation()])
        scope = None if self.ctx.reuse else self.ctx.run_id
        opened = False
        for row in await self.ctx.reads.turns(chain.item.id, stage.name, prepared.key, scope):
            self.turns.save(self.ctx.run_id, dataclasses.replace(row, index=chain.item.index))
            if row.role == OPENING:
                opened = True
            else:
                convo.replay(row)
        if not opened:  # what the agent was asked, for the report's trajectory view
            opening = {"role": OPENING, "messages": [dict(m) for m in convo.messages]}
            self.turns.save(
                self.ctx.run_id, self._row(chain, stage, prepared.key, convo, OPENING, opening, seq=-1)
            )
        while True:
            pending = convo.pending()
            if pending:
                if convo.turn >= stage.max_turns:  # no turn is left to read the results
                    return self._at_budget(stage, convo, f"max_turns ({stage.max_turns})")
                if stage.max_tool_calls is not None and convo.tool_calls > stage.max_tool_calls:
                    return self._at_budget(stage, convo, f"max_tool_calls ({stage.max_tool_calls})")
                if self._over_tokens(stage, convo):
                    return self._at_budget(stage, convo, self._tokens_budget(stage, convo))
                await self._run_tools(chain, stage, prepared.key, convo, pending)
                continue
            answer = convo.answer() if convo.turn else None
            if answer is not None:
                problem = self._problem(stage, answer)
                if problem is None:
                    return convo.called
                await self._ask_repair(chain, stage, prepared.key, convo, problem, answer)
            if convo.turn >= stage.max_turns:
                return self._at_budget(stage, convo, f"max_turns ({stage.max_turns})")
            if self._over_tokens(stage, convo):
                return self._at_budget(stage, convo, self._tokens_budget(stage, convo))
            await self._model_turn(chain, stage, prepared, convo, stats)

    def _problem(self, stage: Stage, answer: str) -> str | None:
        contract = stage.contract
        return None if contract is None else contract.check(answer)[1]

    @staticmethod
    def _over_tokens(stage: Stage, convo: Conversation) -> bool:
        budget = stage.max_tokens_total
        return budget is not None and convo.called.input_tokens + convo.called.output_tokens >= budget

    @staticmethod
    def _tokens_budget(stage: Stage, convo: Conversation) -> str:
        used = convo.called.input_tokens + convo.called.output_tokens
        return f"max_tokens_total ({stage.max_tokens_total}; {used} used)"

    def _at_budget(self, stage: Stage, convo: Conversation, budget: str) -> Called:
        """``then: accept`` keeps the last answer; otherwise the item fails naming the budget."""
        if stage.then == "accept" and self._problem(stage, convo.called.text) is None:
            return convo.called
        last = f"; the last tool asked for was {convo.last_tool!r}" if convo.last_tool else ""
        reason = f"agent stage {stage.name!r} reached {budget} without an answer{last}"
        raise MaxTurns(reason, stage=stage.name)

    async def _ask_repair(
        self, chain: Chain, stage: Stage, key: str, convo: Conversation, problem: str, answer: str
    ) -> None:
        if convo.repairs >= stage.max_repairs:
            tries = f" after {convo.repairs} repairs" if convo.repairs else ""
            raise InvalidOutput(f"output does not match the schema{tries}: {problem}", stage=stage.name)
        self.ctx.stats.repairs += 1
        note = {"role": "user", "content": repair_note(problem, answer).strip()}
        await self._keep(chain, stage, key, convo, "user", note)
        convo.repairs += 1

    async def _model_turn(
        self, chain: Chain, stage: Stage, prepared: Prepared, convo: Conversation, stats: StageStats
    ) -> None:
        """Ask the model once (limiter, retries, calls table, cost) and store its turn."""
        assert prepared.request is not None and prepared.spec is not None
        tools = tuple(tool.definition() for tool in self.tools_of(stage).values())
        if convo.turn and convo.messages[-1]["role"] == "user":
            tools = ()  # a repair asks for the answer alone (Anthropic: the forced answer tool)
        request = dataclasses.replace(prepared.request, messages=tuple(convo.messages), tools=tools)
        turn = convo.turn + 1
        parts = (*prepared.key_parts, ("turn", turn, convo.seq))
        spec = prepared.spec.removesuffix("@batch")
        batch = self.ctx.batch_calls(stage, chain.item.id)  # mode: batch: this turn goes in the next round
        if self.ctx.tracer.on:
            self.ctx.tracer.agent_turn(chain, turn)
        called = await self.calls.attempts(
            chain, stage.name, self.calls.prepare(spec, request, parts, batch), stats
        )
        calls = [call.to_dict() for call in called.tool_calls]
        message: dict[str, Any] = {"role": "assistant", "content": called.text}
        if calls:
            message["tool_calls"] = calls
            convo.last_tool = calls[-1]["name"]
        convo.turn = turn
        convo.tool_calls += len(calls)
        convo.called.add(called)
        tokens = (called.input_tokens, called.output_tokens)
        await self._keep(chain, stage, prepared.key, convo, "assistant", message, tokens=tokens)

    async def _keep(
        self,
        chain: Chain,
        stage: Stage,
        key: str,
        convo: Conversation,
        role: str,
        message: dict[str, Any],
        *,
        seq: int | None = None,
        tool: str | None = None,
        is_error: bool = False,
        seconds: float = 0.0,
        waited: float = 0.0,
        tokens: tuple[int, int] = (0, 0),
    ) -> None:
        """Append a step to the conversation and make it durable before going on."""
        row = self._row(
            chain, stage, key, convo, role, message,
            seq=seq, tool=tool, is_error=is_error, seconds=seconds, waited=waited,
            input_tokens=tokens[0], output_tokens=tokens[1],
            ended=self.ctx.clock.now() - self.ctx.t0 if role == "tool" else None,
        )  # fmt: skip
        self.turns.save(self.ctx.run_id, row)
        if seq is None:
            convo.messages.append(message)
            convo.seq += 1
        await self.ctx.store.durable()

    def _row(
        self, chain: Chain, stage: Stage, key: str, convo: Conversation, role: str, message: dict[str, Any],
        *, seq: int | None, **extra: Any,
    ) -> TurnRow:  # fmt: skip
        """A step of this item's conversation as a store row (``extra``: the row's figures)."""
        return TurnRow(
            index=chain.item.index,
            item_id=chain.item.id,
            stage=stage.name,
            key=key,
            seq=convo.seq if seq is None else seq,
            turn=convo.turn,
            role=role,
            message=message,
            **extra,
        )

    async def _run_tools(
        self, chain: Chain, stage: Stage, key: str, convo: Conversation, pending: list[dict[str, Any]]
    ) -> None:
        """Run the pending calls, ``parallel_tools`` at once; each result is stored as it
        completes, in the conversation in the order the model asked (so any concurrency gives
        the same trajectory)."""
        width = asyncio.Semaphore(stage.parallel_tools)
        base = convo.seq
        results: list[dict[str, Any] | None] = [None] * len(pending)

        async def one(position: int, call: dict[str, Any]) -> None:
            async with width:
                started = self.ctx.clock.now()
                text, is_error, seconds, waited = await self._tool_result(chain, stage, convo.turn, call)
            if self.ctx.tracer.on:
                self.ctx.tracer.tool(
                    chain, call["name"], call["id"], started, self.ctx.clock.now(),
                    error=is_error, arguments=call.get("arguments"), result=text,
                )  # fmt: skip
            message = {"role": "tool", "tool_call_id": call["id"], "content": text, "is_error": is_error}
            results[position] = message
            await self._keep(
                chain, stage, key, convo, "tool", message,
                seq=base + position, tool=call["name"], is_error=is_error, seconds=seconds, waited=waited,
            )  # fmt: skip

        tasks = [asyncio.ensure_future(one(i, call)) for i, call in enumerate(pending)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for message in results:
            assert message is not None
            convo.messages.append(message)
        convo.seq = base + len(pending)

    async def _tool_result(
        self, chain: Chain, stage: Stage, turn: int, call: Mapping[str, Any]
    ) -> tuple[str, bool, float, float]:
        """One call's result as (text, is_error, seconds it ran, seconds it waited for the
        tool's own limits): what went wrong is an error result."""
        tools = self.tools_of(stage)
        tool = tools.get(str(call["name"]))
        self.ctx.stats.tool_calls += 1
        if tool is None:
            listed = ", ".join(sorted(tools)) or "none"
            unknown = clip(repr(call["name"]), 80)
            return f"error: there is no tool {unknown}; the tools are: {listed}", True, 0.0, 0.0
        key = idempotency_key(chain.item.id, stage.name, turn, str(call["id"]))
        timing = [0.0, 0.0]  # waited, ran
        text, is_error = await self._attempt_tool(tool, call.get("arguments") or {}, key, timing)
        if is_error:
            self.ctx.stats.tool_errors += 1
        return text, is_error, timing[1], timing[0]

    async def _attempt_tool(
        self, tool: Tool, arguments: Mapping[str, Any], key: str, timing: list[float]
    ) -> tuple[str, bool]:
        """The call within the tool's own limits and timeout, tried again after a transient
        error up to ``retries`` times; adds to ``timing`` (waited, ran)."""
        settings, clock = tool.settings, self.ctx.clock
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._own_limits(tool, timing):
                    started = clock.now()
                    try:
                        return await asyncio.wait_for(tool.invoke(arguments, key), settings.timeout)
                    finally:
                        timing[1] += clock.now() - started
            except pydantic.ValidationError as exc:
                return f"error: the arguments do not match {tool.name}'s schema: {_errors(exc)}", True
            except (RetryableError, asyncio.TimeoutError) as exc:
                if attempt <= settings.retries:
                    continue
                if isinstance(exc, asyncio.TimeoutError):
                    return f"error: {tool.name} timed out after {settings.timeout:g} s", True
                return f"error: {type(exc).__name__}: {clip(exc, 500)}", True
            except UserCodeError as exc:
                return f"error: {clip(exc, 1000)}", True

    @contextlib.asynccontextmanager
    async def _own_limits(self, tool: Tool, timing: list[float]) -> AsyncIterator[None]:
        """Hold one of the tool's ``concurrency`` slots and take one of its ``rpm`` calls for the
        block; the time waited for them is added to ``timing[0]``."""
        settings, clock = tool.settings, self.ctx.clock
        asked = clock.now()
        slots = self._slots.get(tool.name)
        if slots is None and settings.concurrency is not None:
            slots = self._slots[tool.name] = asyncio.Semaphore(settings.concurrency)
        limiter = self._rates.get(tool.name)
        if limiter is None and settings.rpm is not None:
            limiter = self._rates[tool.name] = ModelLimiter(rpm=settings.rpm, clock=clock, rng=self.ctx.rng)
        if slots is not None:
            await slots.acquire()
        try:
            if limiter is not None:
                limiter.settle(await limiter.acquire(0), 0)
            timing[0] += clock.now() - asked
            yield
        finally:
            if slots is not None:
                slots.release()


def _errors(exc: pydantic.ValidationError) -> str:
    """pydantic's complaints as one line: ``field: message; ...``."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()]
    return clip("; ".join(parts), 1000)
