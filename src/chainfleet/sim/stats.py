"""What the sim server counts: the body of ``GET /sim/stats``, zeroed by ``POST /sim/reset``.

Tests and benchmarks read these to see what a client really did: calls, answers by status,
429s, injected faults, tokens served, and ``completed_by_key`` (successful answers by
:func:`~chainfleet.sim.call.completion_key`), which shows a retry or a resume that asked twice.
The server counts each step of a request as it takes it; a batch job counts its answered
requests through :meth:`Stats.completed` too, so the tokens and the quota are shared.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from chainfleet.sim.call import Call, completion_key

__all__ = ["Stats"]

#: the faults ``/sim/stats`` shows, in this order, each 0 until it happens
_SHOWN_FAULTS = ("slow", "dropped", "malformed", "invalid_output")


class Stats:
    """The counts since the server started or was last reset.

    ``in_flight``: the requests still running at a reset, so the peak starts there.
    """

    def __init__(self, in_flight: int = 0) -> None:
        self.started = time.time()
        self.calls = self.ok = self.rate_limited = 0
        self.input_tokens = self.output_tokens = 0
        self.peak_in_flight = in_flight
        self.status: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.completed_by_key: Counter[str] = Counter()
        #: structured replies by how they were asked for (json_schema, json_object, tool, prompt)
        self.structured: Counter[str] = Counter()
        #: tool calls the simulated agent made, answers sent as server-sent events
        self.tool_calls = self.streamed = 0
        #: requests by route (``/v1/chat/completions``, ``/v1/responses``, ``/v1/messages`` ...)
        self.routes: Counter[str] = Counter()

    @property
    def spent(self) -> int:
        """The tokens served, input and output: what ``quota_tokens`` is checked against."""
        return self.input_tokens + self.output_tokens

    def completed(self, call: Call, completion_tokens: int) -> None:
        """Count one successful answer of ``completion_tokens`` to ``call``."""
        self.ok += 1
        self.input_tokens += call.prompt_tokens
        self.output_tokens += completion_tokens
        self.completed_by_key[completion_key(call.model, call.system, call.prompt)] += 1

    def report(self, in_flight: int, queue: dict[str, Any]) -> dict[str, Any]:
        """The ``GET /sim/stats`` body, with the requests ``in_flight`` now and the queue's stats."""
        return {
            "calls": self.calls,
            "ok": self.ok,
            "status": dict(sorted(self.status.items())),
            "rate_limited": self.rate_limited,
            "faults": {name: self.faults[name] for name in _SHOWN_FAULTS},
            "structured": dict(self.structured),
            "tool_calls": self.tool_calls,
            "routes": dict(sorted(self.routes.items())),
            "streamed": self.streamed,
            "in_flight": in_flight,
            "max_in_flight": self.peak_in_flight,
            "tokens": {"input": self.input_tokens, "output": self.output_tokens},
            "completed_by_key": dict(self.completed_by_key),
            "started": self.started,
            "queue": queue,
        }
