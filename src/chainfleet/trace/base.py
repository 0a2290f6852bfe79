"""The tracer interface the run calls, and the one that does nothing (tracing off).

The chain code never imports OpenTelemetry: it holds a :class:`Tracer` on its run context
(``ctx.tracer``) and calls it at a handful of points (an item starts and ends, a stage starts
and ends, an attempt ends, a stage result is reused, an agent turn or a tool call ends). With
tracing off that object is this class, whose ``on`` is False: the hot path tests ``on`` once per
attempt and calls nothing else, so a run without ``--otel`` pays one attribute read a call.

Attempts are reported *after* they end, with the clock readings the calls table keeps (asked,
started, the limiter's and the cooldown's waits, ended): the tracer draws the ``chat`` span and
its wait spans from those, so nothing is opened or closed around the call itself.

Example::

    tracer = ctx.tracer
    if tracer.on:
        tracer.attempt(chain, AttemptInfo(...))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AttemptInfo", "Tracer"]


@dataclass(kw_only=True)
class AttemptInfo:
    """What one ended attempt of one call was: clock readings (the run clock's seconds) and
    what the model answered. ``error`` is the error's kind (``rate_limited``, ``timeout`` ...)
    when the attempt failed."""

    label: str
    number: int
    queued: float
    started: float
    ended: float
    limiter_wait: float = 0.0
    cooldown_wait: float = 0.0
    backoff: float = 0.0
    provider: str | None = None
    model: str | None = None
    response_model: str | None = None
    max_tokens: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    error_message: str | None = None
    #: the messages sent and the reply (kept only with ``--otel-content``)
    messages: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    reply: str | None = None


class Tracer:
    """Tracing off: every hook does nothing. :class:`chainfleet.trace.otel.OtelTracer` is the
    one that exports."""

    #: whether the hooks do anything (the call path reads this before building an AttemptInfo)
    on = False
    #: whether prompt and reply text goes into the spans (``--otel-content``)
    content = False

    def item_started(self, chain: Any) -> None:
        """An item's chain was admitted (its first pass, or a retry pass)."""

    def item_ended(self, chain: Any, status: str, error: Mapping[str, Any] | None) -> None:
        """An item's outcome was kept: its trace ends here."""

    def stage_started(self, chain: Any, stage: str, kind: str) -> None:
        """A stage of an item began (``kind``: llm, tool or agent)."""

    def stage_ended(self, chain: Any, stage: str, error: BaseException | None = None) -> None:
        """The stage of an item that began last ended (``error``: what failed it)."""

    def attempt(self, chain: Any, info: AttemptInfo) -> None:
        """One attempt of one model call ended (see :class:`AttemptInfo`)."""

    def reused(self, chain: Any, label: str, model: str | None, source: str) -> None:
        """A call was not made: its answer came from ``source`` (``store``, ``cache``,
        ``journal``)."""

    def agent_turn(self, chain: Any, turn: int) -> None:
        """An agent's model turn ``turn`` is about to be asked (its chat spans carry it)."""

    def tool(
        self,
        chain: Any,
        name: str,
        call_id: str,
        started: float,
        ended: float,
        *,
        error: bool,
        arguments: Any = None,
        result: str | None = None,
    ) -> None:
        """One tool call of an agent ended (``arguments`` and ``result``: for ``--otel-content``)."""

    def absorb(self, chain: Any, notes: Any) -> None:
        """What the item did on a Ray worker (:class:`~chainfleet.trace.notes.ItemTrace`, its
        clock readings already on this run's clock) joins its notes."""

    def shutdown(self) -> None:
        """Send what is left, within a bounded time; never raises."""
