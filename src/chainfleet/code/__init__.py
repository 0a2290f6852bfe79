"""Bring your own chain: the user's chain code runs over many inputs with chainfleet's limits,
retries, per-call journal, resume, review and report (issue 20).

One mechanism, two doors. The mechanism:

- :mod:`~chainfleet.code.wire`: what a model request is (provider, model, tokens) and its hash;
- :mod:`~chainfleet.code.gateway`: :class:`Gateway` sends one call of one item
  (:class:`ItemScope`) through the journal, the limiter, the retry policy and the calls table;
- :mod:`~chainfleet.code.transport`: :class:`FleetTransport`, the httpx transport that finds
  the item in a context variable, and :func:`http_client`;
- :mod:`~chainfleet.code.fleet`: :class:`Fleet`, what the user's function gets (SDK clients,
  stages, journaled steps, review);
- :mod:`~chainfleet.code.work`: :class:`CodeWork`, one item's run under the runner.

The Python door is ``chainfleet run my_chain.py:article`` / ``chainfleet.run(article, items)``
(:mod:`~chainfleet.code.target` loads the target); the command door, ``chainfleet exec``, hands
each request of a child process to the same :meth:`Gateway.send`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chainfleet.code.fleet import Fleet, ItemParked, ReviewDecision
    from chainfleet.code.gateway import STAGE, Gateway, ItemScope
    from chainfleet.code.transport import CURRENT, FleetTransport, current_scope, http_client
    from chainfleet.code.work import CodeError, CodeWork

#: each public name's module, imported on first use (PEP 562): ``chainfleet run p.yaml`` imports
#: ``code.target`` to tell a YAML file from a Python target, and must not pay for httpx2
_WHERE = {
    "Fleet": "fleet",
    "ItemParked": "fleet",
    "ReviewDecision": "fleet",
    "STAGE": "gateway",
    "Gateway": "gateway",
    "ItemScope": "gateway",
    "CURRENT": "transport",
    "FleetTransport": "transport",
    "current_scope": "transport",
    "http_client": "transport",
    "CodeError": "work",
    "CodeWork": "work",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CURRENT",
    "STAGE",
    "CodeError",
    "CodeWork",
    "Fleet",
    "FleetTransport",
    "Gateway",
    "ItemParked",
    "ItemScope",
    "ReviewDecision",
    "current_scope",
    "http_client",
]
