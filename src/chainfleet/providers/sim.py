"""The built-in simulated model ``sim``: offline, free, deterministic.

Text comes from :func:`chainfleet.sim.text.generate`, a function of (seed, model, system, prompt)
only, so the same chain gives the same outputs at any concurrency and in any order. Latency is
``latency`` seconds plus up to ``jitter`` more (also a function of the prompt), and is the whole
service time of a call: generating the text counts towards it, as it does on a real server. With
``error_rate`` set, calls fail with a simulated 500 (a retryable ``ServerError``); whether the
n-th call of a given prompt fails is decided by (seed, prompt, n), so failures too are the same
from run to run whatever the interleaving.

An agent's turn (a request with ``messages`` and ``tools``) is played by
:mod:`chainfleet.sim.agent`: a deterministic subset of the tools over one to three turns
(``[[sim:tool_turns=N]]`` in the prompt says how many), then an answer generated from the prompt
and the tools' results, so an output shows what its tools returned.
"""

from __future__ import annotations

import functools
import hashlib

from chainfleet.clock import Clock, SystemClock
from chainfleet.errors import ServerError
from chainfleet.pipeline import SimSettings
from chainfleet.providers.base import Completion, CompletionRequest, Provider, ToolCall
from chainfleet.sim import agent as simagent
from chainfleet.sim import jsonvalue as simjson
from chainfleet.sim import text as simtext

__all__ = ["SimProvider", "sim_text"]


@functools.lru_cache(maxsize=4096)
def sim_text(prompt: str, system: str | None, seed: int, max_tokens: int, model: str) -> str:
    """The simulated model's prose reply: ``simtext.generate``, memoized (the batch adapter
    answers with it too). A pure function, and the simulator's own CPU time should stay out of
    the way of the runner it stands in for (a real model computes elsewhere)."""
    return simtext.generate(prompt, system=system, seed=seed, max_tokens=max_tokens, model=model)


def _unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts`` (stable across processes)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class SimProvider(Provider):
    """The simulated model, with the pipeline's ``sim:`` settings."""

    kind = "sim"

    def __init__(self, settings: SimSettings | None = None, *, clock: Clock | None = None) -> None:
        self.settings = settings or SimSettings()
        self.clock = clock or SystemClock()
        # n-th call per prompt, kept only while a prompt keeps failing (bounded by in-flight work)
        self._failures: dict[str, int] = {}
        # how late the event loop wakes us, on average (see _sleep)
        self._lateness = 0.0

    async def complete(self, request: CompletionRequest) -> Completion:
        s = self.settings
        key = self.key_of(request)
        started = self.clock.now()
        delay = s.latency
        if s.jitter:
            delay += s.jitter * _unit(s.seed, "jitter", key)
        failing = any(text in request.prompt for text in s.fail_on)
        if s.error_rate and not failing:
            nth = self._failures.get(key, 0)
            failing = _unit(s.seed, "fail", key, nth) < s.error_rate
            self._failures[key] = nth + 1
        answer = None if failing else self.answer(request, key)
        # the latency is the whole service time, like a server's: generating the text is part of it
        remaining = delay - (self.clock.now() - started)
        if remaining > 0:
            await self._sleep(remaining)
        if answer is None:
            raise ServerError("simulated 500 Internal Server Error", status=500)
        self._failures.pop(key, None)
        return answer

    @staticmethod
    def key_of(request: CompletionRequest) -> str:
        """What the simulated model's reply depends on (and what its faults are drawn from)."""
        key = f"{request.model}\x00{request.system}\x00{request.prompt}"
        if request.messages is not None:
            steps = (str(m.get("content") or m.get("tool_calls")) for m in request.messages)
            key += "\x00" + "\x00".join(steps)
        return key

    def answer(self, request: CompletionRequest, key: str | None = None) -> Completion:
        """The reply, at once: tool calls when it plays agent and calls, else text. The batch
        adapter answers an agent's turn with it too, so a batched agent goes as an online one."""
        s = self.settings
        key = self.key_of(request) if key is None else key
        calls: tuple[ToolCall, ...] = ()
        if request.tools:
            conversation = request.conversation()
            planned = simagent.next_turn(conversation, request.tools, seed=s.seed, tool_turns=s.tool_turns)
            calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in planned)
        text = "" if calls else self._text(request, key)
        sent = [str(m.get("content") or "") for m in request.conversation()]
        said = text + "".join(str(c.arguments) for c in calls)
        return Completion(
            text=text,
            input_tokens=sum(simtext.count_tokens(part) for part in sent if part),
            output_tokens=simtext.count_tokens(said) if said else 0,
            model=request.model,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop",
        )

    def _text(self, request: CompletionRequest, key: str) -> str:
        """The reply: prose, or JSON for the request's schema (malformed for a deterministic
        share of prompts with ``invalid_output_rate``)."""
        s = self.settings
        user = request.prompt
        if request.messages is not None:  # an agent's answer: made from the prompt and tool results
            if request.schema is None:
                return simagent.answer(
                    request.messages, seed=s.seed, max_tokens=request.max_tokens, model=request.model
                )
            user = simagent.answer_prompt(request.messages)
        if request.schema is None:
            return sim_text(user, request.system, s.seed, request.max_tokens, request.model)
        prompt = f"{request.system}\n{user}" if request.system else user
        if s.invalid_output_rate and _unit(s.seed, "invalid", key) < s.invalid_output_rate:
            return simjson.malformed(request.schema, prompt=prompt, seed=s.seed)
        return simjson.reply(request.schema, prompt=prompt, seed=s.seed)

    async def _sleep(self, seconds: float) -> None:
        """Sleep so the call's service time is ``latency`` on average, not latency + lateness.

        asyncio wakes a sleeper late: its timers round up to the millisecond and the kernel adds
        slack, about 0.3 ms on a 20 ms sleep here. A real server's latency has no such bias, so
        the simulator learns its average lateness (a moving average) and asks for that much less.
        """
        before = self.clock.now()
        await self.clock.sleep(max(0.0, seconds - self._lateness))
        late = (self.clock.now() - before) - seconds
        self._lateness = max(0.0, min(0.002, self._lateness + 0.1 * late))

    def __repr__(self) -> str:
        return f"SimProvider({self.settings!r})"
