"""Which batch adapter a provider gets: the one place that knows every concrete adapter.

It sits above the adapters (they import :mod:`chainfleet.providers.batch.base`, never this), and
imports each adapter only when a provider of its kind asks, so a run on ``sim`` loads neither SDK.
A provider of any other kind, built in or plugged in, has no batch API: asking is a
``ConfigError`` that says to run it online.

Example::

    adapter = batch_adapter_for(pool.for_model("openai:gpt-4o-mini")[0])
"""

from __future__ import annotations

from chainfleet.errors import ConfigError
from chainfleet.providers.base import Provider
from chainfleet.providers.batch.base import BatchAdapter

__all__ = ["batch_adapter_for"]


def batch_adapter_for(provider: Provider, *, sim_delay: float = 1.0) -> BatchAdapter:
    """The batch adapter of ``provider``, or ``ConfigError`` for one without a batch API.

    ``sim_delay``: seconds a ``sim`` batch job takes (on the run's clock).
    """
    kind = provider.kind
    if kind == "sim":
        from chainfleet.providers.batch.sim import SimBatchAdapter
        from chainfleet.providers.sim import SimProvider

        if isinstance(provider, SimProvider):
            return SimBatchAdapter(provider, delay=sim_delay)
    if kind == "openai":
        from chainfleet.providers.batch.openai import OpenAIBatchAdapter
        from chainfleet.providers.openai import OpenAIProvider

        if isinstance(provider, OpenAIProvider):
            return OpenAIBatchAdapter(provider)
    if kind == "anthropic":
        from chainfleet.providers.anthropic import AnthropicProvider
        from chainfleet.providers.batch.anthropic import AnthropicBatchAdapter

        if isinstance(provider, AnthropicProvider):
            return AnthropicBatchAdapter(provider)
    raise ConfigError(
        f"provider {getattr(provider, 'name', kind)!r} ({kind}) has no batch API; run it online"
    )
