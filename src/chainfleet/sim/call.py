"""One request to the sim server, whichever route or batch job it came by.

Every wire format (:mod:`chainfleet.sim.wire`, :mod:`chainfleet.sim.responses`) parses a request
body into a :class:`Call`: the model, the system and prompt texts, ``max_tokens``, how the
request asks for JSON, the :class:`Conversation` in the neutral form the simulated agent reads
(:mod:`chainfleet.sim.agent`: messages, tools, tool calls and results) and whether to stream.
The model's answer to it is a :class:`Reply`: text, or tool calls. Every
refusal on the way, from a missing key to a rate limit to an injected fault, is a raised
:class:`Failure` naming its ``kind``; each wire format turns it into its own status and error
body, so the rules are written once and the two formats only differ in words.

Example::

    call = Call("gpt-4o-mini", "You are terse.", "Research tea.", max_tokens=256)
    call.prompt_tokens                  # what the limits charge, with max_tokens
    raise Failure("model_not_found", model=call.model)
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from chainfleet.sim import text as simtext
from chainfleet.sim.agent import PlannedCall
from chainfleet.sim.structured import StructuredAsk

__all__ = ["Call", "Conversation", "Failure", "Reply", "completion_key", "mask"]


class Failure(Exception):
    """An error answer: ``kind`` is looked up in the route's table, ``fields`` fill its message.

    ``status`` overrides the table's status (``[[sim:NNN]]``); ``retry_after`` (seconds) adds
    the retry headers of the route.
    """

    def __init__(
        self, kind: str, *, status: int | None = None, retry_after: float | None = None, **fields: Any
    ) -> None:
        super().__init__(kind)
        self.kind, self.status, self.retry_after, self.fields = kind, status, retry_after, fields


@dataclass(frozen=True)
class Conversation:
    """A request's messages and tools in the neutral form :mod:`chainfleet.sim.agent` reads.

    ``tools`` is empty when the request has none or says ``tool_choice: none`` (and for
    Anthropic's forced ``tool_choice``, which asks for structured output instead); ``force``:
    it must call a tool (OpenAI ``tool_choice: required`` or a named function); ``parallel``:
    more than one call a turn is allowed.
    """

    messages: tuple[dict[str, Any], ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    force: bool = False
    parallel: bool = True

    @property
    def plays_agent(self) -> bool:
        """Whether the simulated agent answers: there are tools, or tool results to use."""
        return bool(self.tools) or any(m.get("role") == "tool" for m in self.messages)


@dataclass(frozen=True)
class Call:
    """What the simulated model is asked, the same for every route and for batch requests."""

    model: str
    system: str
    prompt: str
    max_tokens: int
    #: how the request asks for JSON (None: plain text)
    ask: StructuredAsk | None = None
    talk: Conversation = field(default_factory=Conversation, compare=False)
    #: ``stream: true``: the answer goes out as server-sent events
    stream: bool = False
    #: OpenAI chat's ``stream_options.include_usage``: a last chunk with the usage
    include_usage: bool = False

    @functools.cached_property
    def prompt_tokens(self) -> int:
        """P: the tokens of the system and prompt texts (and of the tool definitions)."""
        tools = json.dumps(self.talk.tools) if self.talk.tools else ""
        return sum(simtext.count_tokens(text) for text in (self.system, self.prompt, tools))


@dataclass(frozen=True)
class Reply:
    """The simulated model's answer to a call: ``text``, or ``calls`` to tools (then no text)."""

    text: str = ""
    calls: tuple[PlannedCall, ...] = ()

    @functools.cached_property
    def tokens(self) -> int:
        """C: the tokens of the text, or of the calls' names and arguments as JSON."""
        called = (f"{c.name}{json.dumps(c.arguments, ensure_ascii=False)}" for c in self.calls)
        return simtext.count_tokens(self.text) + sum(simtext.count_tokens(c) for c in called)


def mask(key: str) -> str:
    """A key as error messages may show it: at most its last 4 characters, and only when long.

    >>> mask("sk-sim-test-key-0123456789"), mask("short")
    ('sk-...6789', 'sk-...****')
    """
    return "sk-..." + (key[-4:] if len(key) >= 12 else "****")


def completion_key(model: str, system: str, prompt: str) -> str:
    """The key ``/sim/stats`` counts successful answers under (``completed_by_key``)."""
    return hashlib.sha256(f"{model}\x00{system}\x00{prompt}".encode()).hexdigest()[:16]
