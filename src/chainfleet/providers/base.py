"""The provider interface: one small base class, and every model behind it a peer.

A provider turns one :class:`CompletionRequest` into one :class:`Completion`, or raises one of
the :mod:`chainfleet.errors` ``CallError`` classes. It knows nothing of runs, items or retries:
the runner owns the one retry loop, so adapters must not retry on their own.

An agent's turn carries a conversation instead of one prompt: ``messages`` in a neutral form
every adapter translates to its wire format, and the ``tools`` the model may call; the model's
answer may then hold :class:`ToolCall` s instead of (or besides) text. A neutral message is::

    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"id", "name", "arguments"}],   # an assistant's calls
     "tool_call_id": str, "is_error": bool}           # a tool's result

and a tool is ``{"name", "description", "parameters"}`` (a JSON Schema).

Example::

    class Echo(Provider):
        async def complete(self, request: CompletionRequest) -> Completion:
            return Completion(text=request.prompt, input_tokens=1, output_tokens=1)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for: the provider's id for it, the tool's name, its arguments."""

    id: str
    name: str
    arguments: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": dict(self.arguments)}


@dataclass(frozen=True, kw_only=True)
class CompletionRequest:
    """One request to one model: what a stage sends after rendering its template."""

    model: str
    prompt: str
    system: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.0
    #: a JSON Schema the reply must match (a stage's ``output:`` contract, or a judge's verdict)
    schema: Mapping[str, Any] | None = None
    #: how to ask for it: natively (OpenAI's strict response_format, Anthropic's forced tool
    #: call), as JSON mode with the schema in the prompt, or by the prompt alone
    structured: Literal["json_schema", "json_object", "prompt"] = "json_schema"
    #: the schema's name where the wire format wants one
    schema_name: str = "output"
    #: an agent's conversation so far (neutral messages, see the module docstring); when set it
    #: replaces ``system`` + ``prompt``
    messages: tuple[Mapping[str, Any], ...] | None = None
    #: the tools the model may call: ``{name, description, parameters}``
    tools: tuple[Mapping[str, Any], ...] = ()

    def conversation(self) -> list[Mapping[str, Any]]:
        """The messages to send: ``messages``, or ``system`` and ``prompt`` as two of them."""
        if self.messages is not None:
            return list(self.messages)
        first: list[Mapping[str, Any]] = [{"role": "system", "content": self.system}] if self.system else []
        return [*first, {"role": "user", "content": self.prompt}]

    @property
    def wire_schema_name(self) -> str:
        """``schema_name`` as both APIs take a schema's or tool's name: letters, digits, ``_``
        and ``-``, at most 64 long."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.schema_name)[:64] or "output"


@dataclass(frozen=True, kw_only=True)
class Completion:
    """What came back: the text, the tokens it cost, and the response headers worth keeping."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    model: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: the tools the model asked to call (an agent's turn); empty when it answered
    tool_calls: tuple[ToolCall, ...] = ()
    #: why the model stopped, as the provider says it (``stop``, ``length``, ``end_turn`` ...)
    finish_reason: str | None = None


class Provider:
    """Base class of every model backend (sim, OpenAI, Anthropic ...)."""

    #: the provider kind as written before the colon in a model string, e.g. ``"sim"``
    kind = "base"

    async def complete(self, request: CompletionRequest) -> Completion:
        """Make one call. Raise a ``chainfleet.errors.CallError`` subclass on failure."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections. Called once when the run ends."""
