"""How fast, how many at once, and how often again: everything that keeps calls within limits.

A provider meters each API key (requests and tokens a minute), refuses what goes over (429)
and says in its headers how much is left; a local server has a number of slots and queues or
refuses past them. This package keeps a run inside both, without ever being told more than the
server says. The names below are its surface; its modules:

- :mod:`~chainfleet.limits.limiter`: :class:`ModelLimiter`, one per model: token buckets for
  requests and tokens a minute, a cooldown gate closed by a 429, limits learned from headers;
- :mod:`~chainfleet.limits.tokens`: :func:`estimate_tokens`, what a call reserves;
- :mod:`~chainfleet.limits.headers`: reading Retry-After and the rate-limit headers;
- :mod:`~chainfleet.limits.sharing`: :class:`KeyShare`, our share of a key others also use;
- :mod:`~chainfleet.limits.group`: :class:`LimitGroup`, jobs on one machine sharing one bucket;
- :mod:`~chainfleet.limits.adaptive`: :class:`AdaptiveConcurrency`, how many chains in flight
  (``--concurrency auto``), fed by the queue estimate of :mod:`~chainfleet.limits.control`;
- :mod:`~chainfleet.limits.retry`: :class:`RetryPolicy`, which errors are retried and when;
- :mod:`~chainfleet.limits.facts`: what the report says about the limits of a run.

Example::

    from chainfleet.limits import ModelLimiter, estimate_tokens

    limiter = ModelLimiter(rpm=500, tpm=200_000)
    reservation = await limiter.acquire(tokens=estimate_tokens(prompt) + max_tokens)
    ...                                   # make the call
    limiter.settle(reservation, used_tokens=completion_tokens)
"""

from chainfleet.limits.adaptive import AdaptiveConcurrency
from chainfleet.limits.control import QueueEstimate
from chainfleet.limits.facts import limit_facts, limit_lines
from chainfleet.limits.group import LimitGroup
from chainfleet.limits.headers import (
    RateLimitInfo,
    keep_headers,
    parse_rate_limits,
    parse_retry_after,
    retry_after_from,
)
from chainfleet.limits.limiter import ModelLimiter, Reservation, TooLarge
from chainfleet.limits.retry import RetryPolicy, retry_in_next_pass
from chainfleet.limits.sharing import KeyShare
from chainfleet.limits.tokens import estimate_tokens

__all__ = [
    "AdaptiveConcurrency",
    "KeyShare",
    "LimitGroup",
    "ModelLimiter",
    "QueueEstimate",
    "RateLimitInfo",
    "Reservation",
    "RetryPolicy",
    "TooLarge",
    "estimate_tokens",
    "keep_headers",
    "limit_facts",
    "limit_lines",
    "parse_rate_limits",
    "parse_retry_after",
    "retry_after_from",
    "retry_in_next_pass",
]
