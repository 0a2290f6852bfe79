"""The sim server's failure injection: prompt triggers for tests, seeded random faults for rehearsals.

Tests ask for a failure in the prompt, and get it every time:

- ``[[sim:500]]``: any status 400-599 (e.g. 503, 529, 400; ``[[sim:429]]`` is a rate limit
  with a 1 s retry-after online), answered after admission;
- ``[[sim:quota]]``: "insufficient quota", as an exhausted ``quota_tokens`` gives;
- ``[[sim:content_filter]]``, ``[[sim:slow]]``, ``[[sim:drop]]``, ``[[sim:malformed]]``;
- ``[[sim:fail-once-KEY]]``: a 500 the first time KEY is seen, success after.

Rehearsals set rates instead: :class:`Faults` draws once per admitted call from a
``random.Random(seed)`` against ``error_rate`` (500), ``overload_rate`` (503 OpenAI, 529
Anthropic), ``slow_rate`` (wait ``slow_seconds`` first), ``drop_rate`` (close the connection
unanswered) and ``malformed_rate`` (200 with a body that is not JSON), in that order, and from
the same generator the jitter of each answer, so a seed replays a run's faults and timing.

Example::

    faults = Faults(seed=0)
    faults.fault(prompt_trigger("[[sim:slow]] Research tea."), rates)    # "slow"
    faults.fault(None, {"error": 1.0})                                   # raises Failure("server_error")
"""

from __future__ import annotations

import random
import re

from chainfleet.sim.call import Call, Failure

__all__ = ["Faults", "check_quota", "malformed_body", "prompt_trigger", "status_failure"]

_TRIGGER = re.compile(r"\[\[sim:([A-Za-z0-9_.:-]+)\]\]")


def prompt_trigger(prompt: str) -> str | None:
    """The first ``[[sim:...]]`` trigger in the prompt.

    >>> prompt_trigger("Research tea. [[sim:503]]")
    '503'
    """
    match = _TRIGGER.search(prompt)
    return match.group(1) if match else None


def status_failure(trigger: str | None) -> Failure | None:
    """The answer to ``[[sim:STATUS]]`` (None when the trigger is not a status 400-599)."""
    if trigger is None or not trigger.isdigit() or not 400 <= int(trigger) <= 599:
        return None
    status = int(trigger)
    kind = {400: "bad_request", 500: "server_error", 503: "overloaded", 529: "overloaded"}.get(
        status, "status"
    )
    return Failure(kind, status=status, detail=f"simulated {status} ([[sim:{status}]])")


def check_quota(trigger: str | None, spent: int, quota: int | None) -> None:
    """Raise "insufficient quota" for ``[[sim:quota]]`` or once ``spent`` tokens reach ``quota``."""
    if trigger == "quota" or (quota is not None and spent >= quota):
        raise Failure("quota")


class Faults:
    """The server's seeded draws: which admitted call fails or slows, and each answer's jitter."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._failed_once: set[str] = set()

    def reseed(self, seed: int) -> None:
        """Start the draws again from ``seed`` (fail-once keys stay seen)."""
        self._rng.seed(seed)

    def reset(self, seed: int) -> None:
        """Start the draws again and forget the fail-once keys (``/sim/reset``)."""
        self._rng.seed(seed)
        self._failed_once.clear()

    def fault(self, trigger: str | None, rates: dict[str, float]) -> str | None:
        """The fault for an admitted call ("slow", "drop", "malformed", None) or a raised failure.

        A trigger decides alone; else one draw against ``rates`` (fault name -> share, in the
        order of ``SimServerSettings.fault_rates``).
        """
        if trigger is not None:
            if trigger.startswith("fail-once-"):
                if trigger not in self._failed_once:
                    self._failed_once.add(trigger)
                    raise Failure("server_error")
                return None
            failure = status_failure(trigger)
            if failure is not None:
                raise failure
            if trigger == "content_filter":
                raise Failure("content_filter")
            if trigger in ("slow", "drop", "malformed"):
                return trigger
        return self._draw(rates)

    def _draw(self, rates: dict[str, float]) -> str | None:
        draw = self._rng.random()
        for fault, rate in rates.items():
            if draw < rate:
                if fault == "error":
                    raise Failure("server_error")
                if fault == "overload":
                    raise Failure("overloaded")
                return fault
            draw -= rate
        return None

    def delay(self, latency: float, jitter: float) -> float:
        """The service time of one answer: ``latency`` plus up to ``jitter`` seconds."""
        return latency + (self._rng.uniform(0, jitter) if jitter else 0.0)


def malformed_body(call: Call, number: int) -> bytes:
    """A 200 body cut off mid-JSON, as a proxy that dropped the end of the stream would send."""
    return f'{{"id": "sim-{number}", "model": "{call.model}", "choices": [{{"index": 0, "mess'.encode()
