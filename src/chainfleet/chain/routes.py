"""Routing: which of a route's targets takes a call, and when a target is out of service.

A route (:mod:`chainfleet.pipeline.routes`) is a model name that stands for an ordered list of
targets, each with its own provider (key, URL) and its own limiter. :class:`Route` decides,
call by call, where a call goes:

- ``fallback``: the first target in service;
- ``spill``: the first target whose limiter can admit the call within ``spill_after`` seconds
  (:meth:`~chainfleet.limits.ModelLimiter.admit_wait`). A limiter that has not yet read a
  response (slow start) admits only its probe, so no target takes traffic before its limits
  are known, and a full target is noticed before it refuses anything; when every target is
  full the call queues where the wait is shortest;
- ``split``: smooth weighted round robin over the targets in service (shares by ``weights``).

With ``pin: item`` the calls of one item's stage (its retries, its repairs) stay on the target
the first one took, unless that target goes out of service.

A target goes **out of service** on a refused key, an unknown model, an exhausted quota, an
endpoint found dead (:mod:`chainfleet.limits.health`), or ``out_after`` connection failures or
5xx (500-504, 529) in a row. The call that saw it is tried again at once on the next target; after
``probe_after`` seconds one call probes the target, and a success brings it back. When every
target is out, the call goes to the one that went out first; when that fails too, its error is
the call's.

Every choice is counted: per target calls, tokens, 429s and failures, and why traffic moved
("spilled 1,240 calls to anthropic:claude-haiku-4-5 while openai:gpt-4o-mini was full"); the
run keeps :meth:`Route.stats` with its session, and the report reads it from there.

Example::

    route = Route("fast", settings, targets, clock=clock)
    target = route.choose(pin=("item-7", "summarize"), tokens=900)
    ...                                           # call target.provider through target.limiter
    route.succeeded(target, tokens_in=700, tokens_out=120)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chainfleet.clock import Clock
from chainfleet.errors import CallError, ConnectionFailed, Overloaded, ServerError
from chainfleet.limits import ModelLimiter
from chainfleet.pipeline.routes import RouteSettings
from chainfleet.providers import Provider
from chainfleet.providers.prices import Price

__all__ = ["PINS_KEPT", "Route", "Target"]

#: how many (item, stage) pins a route remembers, the oldest forgotten first
PINS_KEPT = 100_000

#: errors that take a target out of service at once (the next one takes the call)
_OUT_AT_ONCE = ("auth_failed", "model_not_found", "quota_exhausted", "endpoint_down")


@dataclass(eq=False)
class Target:
    """One target of a route as a run uses it: its provider and limiter, its state, its counts."""

    index: int
    label: str
    #: ``provider:model``: what it is priced as
    spec: str
    provider: Provider
    #: the bare model name sent in the request
    model: str
    limiter: ModelLimiter | None
    #: when it comes back for a probe (None: in service)
    out_until: float | None = None
    out_reason: str = ""
    probing: bool = False
    #: connection failures or 5xx in a row
    failures: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("calls", "ok", "failed", "rate_limited", "input_tokens", "output_tokens"), 0
        )
    )

    def wait(self, tokens: int) -> float | None:
        """Seconds before its limiter would admit a call now (0: unmetered; None: unknown)."""
        return 0.0 if self.limiter is None else self.limiter.admit_wait(tokens)


class Route:
    """The routing decisions of one route in one run: see the module docstring."""

    def __init__(self, name: str, settings: RouteSettings, targets: list[Target], *, clock: Clock) -> None:
        self.name, self.settings, self.targets, self.clock = name, settings, targets, clock
        weights = settings.weights or [1.0] * len(targets)
        self._weights = [float(w) for w in weights]
        self._credit = [0.0] * len(targets)
        self._pins: dict[tuple[str, str], int] = {}
        #: (kind, from, to, reason) -> calls moved
        self.moves: dict[tuple[str, str, str, str], int] = {}

    # -- where a call goes ----------------------------------------------------------------------

    def choose(
        self, pin: tuple[str, str] | None = None, tokens: int = 0, avoid: frozenset[int] = frozenset()
    ) -> Target | None:
        """The target for a call (None: every target was tried, ``avoid``)."""
        now = self.clock.now()
        candidates = [t for t in self.targets if t.index not in avoid]
        if not candidates:
            return None
        ready = [t for t in candidates if t.out_until is None or (now >= t.out_until and not t.probing)]
        pinned = self._pins.get(pin) if pin is not None and self.settings.pin == "item" else None
        chosen = next((t for t in ready if t.index == pinned), None)
        if chosen is None:
            chosen = self._pick(ready, tokens) if ready else min(candidates, key=_out_since)
            self._note_move(chosen)
            if pin is not None and self.settings.pin == "item":
                self._pin(pin, chosen.index)
        if chosen.out_until is not None:
            chosen.probing = True  # one call probes a resting target
        chosen.counts["calls"] += 1
        return chosen

    def _pin(self, pin: tuple[str, str], index: int) -> None:
        """Remember an item's stage's target; the oldest pins go first past ``PINS_KEPT`` (the
        items in flight are far fewer: a long run must not keep one per item it ever ran)."""
        self._pins.pop(pin, None)
        self._pins[pin] = index
        if len(self._pins) > PINS_KEPT:
            del self._pins[next(iter(self._pins))]

    def _pick(self, ready: list[Target], tokens: int) -> Target:
        policy = self.settings.policy
        if policy == "split":
            return self._split(ready)
        if policy == "spill":
            waits = [(t.wait(tokens), t) for t in ready]
            for wait, target in waits:
                if wait is not None and wait <= self.settings.spill_after:
                    return target
            known = [(w, t.index, t) for w, t in waits if w is not None]
            return min(known)[2] if known else ready[0]
        return ready[0]

    def _split(self, ready: list[Target]) -> Target:
        """Smooth weighted round robin (as nginx shares upstreams): exact shares, no runs."""
        total = sum(self._weights[t.index] for t in ready)
        for t in ready:
            self._credit[t.index] += self._weights[t.index]
        best = max(ready, key=lambda t: (self._credit[t.index], -t.index))
        self._credit[best.index] -= total
        return best

    def _note_move(self, chosen: Target) -> None:
        """Why a call did not go to the first target (split shares are no move)."""
        first = self.targets[0]
        if chosen is first or self.settings.policy == "split":
            return
        if first.out_until is not None:
            move = ("fell back", first.label, chosen.label, first.out_reason)
        elif self.settings.policy == "spill":
            move = ("spilled", first.label, chosen.label, "full")
        else:
            return
        self.moves[move] = self.moves.get(move, 0) + 1

    # -- what came of it -------------------------------------------------------------------------

    def succeeded(self, target: Target, tokens_in: int, tokens_out: int) -> None:
        """A call to ``target`` got its answer: a resting target is back in service."""
        target.failures = 0
        target.counts["ok"] += 1
        target.counts["input_tokens"] += tokens_in
        target.counts["output_tokens"] += tokens_out
        if target.out_until is not None:
            self._bring_back(target)

    def _bring_back(self, target: Target) -> None:
        back = ("back", target.label, target.label, "a probe succeeded")
        self.moves[back] = self.moves.get(back, 0) + 1
        target.out_until, target.probing, target.out_reason = None, False, ""

    def failed(self, target: Target, error: CallError) -> bool:
        """A call to ``target`` failed: whether the target is out of service now (the call
        may go to another target at once)."""
        target.counts["failed"] += 1
        full = error.kind == "rate_limited"  # full, not broken: its limiter holds the gate
        if full:
            target.counts["rate_limited"] += 1
        if target.probing:  # a refusal is an answer: it is back; anything else, out again
            if full:
                self._bring_back(target)
                return False
            self._take_out(target, error)
            return True
        if isinstance(error, ConnectionFailed | ServerError | Overloaded):
            # any 5xx: a 503 or Anthropic's 529 ("overloaded") is as out of service as a 500
            # to the calls that meet it (a streak of 503s kept every call on the dead target)
            target.failures += 1
        if error.kind in _OUT_AT_ONCE or target.failures >= self.settings.out_after:
            self._take_out(target, error)
            return True
        return False

    def released(self, target: Target) -> None:
        """A call to ``target`` was cancelled: a probe it was is owed to the next call."""
        target.probing = False

    def _take_out(self, target: Target, error: CallError) -> None:
        target.out_until = self.clock.now() + self.settings.probe_after
        target.probing = False
        target.out_reason = f"out of service: {error.kind}"

    def stats(self, price: Callable[[str], Price | None] | None = None) -> dict[str, Any]:
        """What the report shows: per target its counts and cost (``price`` of its model; None:
        unknown), and why traffic moved."""
        targets = []
        for t in self.targets:
            known = price(t.spec) if price is not None else None
            cost = known.cost(t.counts["input_tokens"], t.counts["output_tokens"]) if known else None
            targets.append({"label": t.label, "model": t.spec, **t.counts, "cost_usd": cost})
        return {
            "policy": self.settings.policy,
            "targets": targets,
            "moves": [
                {"kind": kind, "from": src, "to": dst, "reason": why, "calls": n}
                for (kind, src, dst, why), n in self.moves.items()
            ],
        }


def _out_since(target: Target) -> float:
    return target.out_until if target.out_until is not None else float("-inf")
