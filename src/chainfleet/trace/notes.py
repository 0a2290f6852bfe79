"""What an item did, noted for its trace while it runs: plain dataclasses, no OpenTelemetry.

:class:`NotingTracer` keeps the notes (:class:`ItemTrace` on ``chain.trace``: its stages with
their start and end, each attempt's :class:`~chainfleet.trace.base.AttemptInfo`, reused calls,
tool calls) and draws nothing. :class:`~chainfleet.trace.otel.OtelTracer` is a NotingTracer that
turns an item's notes into spans when the item ends (see its module for why at the end).

A Ray worker (:mod:`chainfleet.backends.ray_worker`) runs its chains with a bare NotingTracer:
the notes are plain values, so they pickle and travel back to the driver with the chain's result
(after :meth:`ItemTrace.shift` puts their clock readings on the run's scale), where the driver's
OtelTracer takes them in (:meth:`NotingTracer.absorb`) and draws the same spans as for a local
item. The worker never imports the SDK.

Example::

    tracer = NotingTracer(clock, content=False)
    tracer.item_started(chain)           # chain.trace = ItemTrace(...)
    ...                                  # the chain code calls the hooks
    notes = chain.trace.shift(-t0)       # readings as seconds since the run's start
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from chainfleet.clock import Clock
from chainfleet.trace.base import AttemptInfo, Tracer

__all__ = ["ItemTrace", "NotingTracer", "StageNote", "Step"]

#: one noted step: ("chat", AttemptInfo, turn) | ("reused", (label, model, source, at), None)
#: | ("tool", (name, call id, started, ended, error, arguments, result), turn)
Step = tuple[str, Any, "int | None"]


@dataclass
class StageNote:
    """One stage of an item as it ran: when, how it ended (the error's kind and message, kept
    as text so the note pickles whatever the exception was), and its steps."""

    name: str
    kind: str
    started: float
    ended: float | None = None
    error_type: str | None = None
    error_message: str = ""
    steps: list[Step] = field(default_factory=list)


@dataclass
class ItemTrace:
    """What one item did so far: its stages, the steps outside any stage (a code chain's calls),
    the stage in progress and the agent's turn."""

    started: float
    stages: list[StageNote] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    stage: StageNote | None = None
    turn: int | None = None

    def note(self, step: Step) -> None:
        (self.stage.steps if self.stage is not None else self.steps).append(step)

    def shift(self, delta: float) -> ItemTrace:
        """These notes with every clock reading moved by ``delta`` seconds (in place; returned
        for chaining): how a worker's readings go onto the driver's clock."""
        self.started += delta
        for stage in self.stages:
            stage.started += delta
            if stage.ended is not None:
                stage.ended += delta
            stage.steps = [_shifted(step, delta) for step in stage.steps]
        self.steps = [_shifted(step, delta) for step in self.steps]
        return self


def _shifted(step: Step, delta: float) -> Step:
    kind, what, turn = step
    if kind == "chat":
        info: AttemptInfo = what
        return (
            kind,
            replace(info, queued=info.queued + delta, started=info.started + delta, ended=info.ended + delta),
            turn,
        )
    if kind == "reused":
        label, model, source, at = what
        return kind, (label, model, source, at + delta), turn
    name, call_id, started, ended, *rest = what
    return kind, (name, call_id, started + delta, ended + delta, *rest), turn


class NotingTracer(Tracer):
    """Notes what each item does on ``chain.trace`` and exports nothing (a Ray worker's tracer;
    the base of :class:`~chainfleet.trace.otel.OtelTracer`). ``item_ended`` leaves the notes
    where they are: whoever holds the chain takes them."""

    on = True

    def __init__(self, clock: Clock, *, content: bool = False) -> None:
        self.clock = clock
        self.content = content

    def item_started(self, chain: Any) -> None:
        if chain.trace is None:  # (a retry pass: the item's trace goes on)
            chain.trace = ItemTrace(self.clock.now())

    def stage_started(self, chain: Any, stage: str, kind: str) -> None:
        held: ItemTrace | None = chain.trace
        if held is not None:
            held.turn = None
            held.stage = StageNote(stage, kind, self.clock.now())
            held.stages.append(held.stage)

    def stage_ended(self, chain: Any, stage: str, error: BaseException | None = None) -> None:
        held: ItemTrace | None = chain.trace
        if held is not None and held.stage is not None:
            held.stage.ended = self.clock.now()
            if error is not None:
                held.stage.error_type = str(getattr(error, "kind", type(error).__name__))
                held.stage.error_message = str(error)[:500]
            held.stage = held.turn = None

    def agent_turn(self, chain: Any, turn: int) -> None:
        held: ItemTrace | None = chain.trace
        if held is not None:
            held.turn = turn

    def attempt(self, chain: Any, info: AttemptInfo) -> None:
        held: ItemTrace | None = chain.trace
        if held is not None:
            held.note(("chat", info, held.turn))
        self._measure(info, info.model or info.label)

    def reused(self, chain: Any, label: str, model: str | None, source: str) -> None:
        held: ItemTrace | None = chain.trace
        if held is not None:
            held.note(("reused", (label, model, source, self.clock.now()), None))

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
        held: ItemTrace | None = chain.trace
        if held is not None:
            text = (arguments, result) if self.content else (None, None)
            held.note(("tool", (name, call_id, started, ended, error, *text), held.turn))

    def item_ended(self, chain: Any, status: str, error: Mapping[str, Any] | None) -> None:
        """Nothing: the notes stay on ``chain.trace`` for whoever holds the chain."""

    def absorb(self, chain: Any, notes: ItemTrace) -> None:
        """Take in what the item did elsewhere (a Ray worker's notes, already on this tracer's
        clock): its stages and steps join the item's notes, and its attempts are measured as if
        made here."""
        held: ItemTrace | None = chain.trace
        if held is None:
            chain.trace = held = ItemTrace(notes.started)
        held.stages.extend(notes.stages)
        held.steps.extend(notes.steps)
        for stage in notes.stages:
            self._measure_steps(stage.steps)
        self._measure_steps(notes.steps)

    def _measure_steps(self, steps: list[Step]) -> None:
        for kind, what, _turn in steps:
            if kind == "chat":
                self._measure(what, what.model or what.label)

    def _measure(self, info: AttemptInfo, model: str) -> None:
        """Record the attempt's metrics (none here; the OtelTracer's histograms)."""
