"""One request to the sim server, whichever route or batch job it came by.

Both wire formats (:mod:`chainfleet.sim.wire`) parse a request body into a :class:`Call`: the
model, the system and prompt texts, ``max_tokens`` and how the request asks for JSON. Every
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
from dataclasses import dataclass
from typing import Any

from chainfleet.sim import text as simtext
from chainfleet.sim.structured import StructuredAsk

__all__ = ["Call", "Failure", "completion_key", "mask"]


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
class Call:
    """What the simulated model is asked, the same for both routes and for batch requests."""

    model: str
    system: str
    prompt: str
    max_tokens: int
    #: how the request asks for JSON (None: plain text)
    ask: StructuredAsk | None = None

    @functools.cached_property
    def prompt_tokens(self) -> int:
        """P: the tokens of the system and prompt texts."""
        return simtext.count_tokens(self.system) + simtext.count_tokens(self.prompt)


def mask(key: str) -> str:
    """A key as error messages may show it: at most its last 4 characters, and only when long.

    >>> mask("sk-sim-test-key-0123456789"), mask("short")
    ('sk-...6789', 'sk-...****')
    """
    return "sk-..." + (key[-4:] if len(key) >= 12 else "****")


def completion_key(model: str, system: str, prompt: str) -> str:
    """The key ``/sim/stats`` counts successful answers under (``completed_by_key``)."""
    return hashlib.sha256(f"{model}\x00{system}\x00{prompt}".encode()).hexdigest()[:16]
