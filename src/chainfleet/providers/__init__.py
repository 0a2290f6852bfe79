"""Model backends behind one small interface, found by the kind before the colon of a model string.

- :mod:`~chainfleet.providers.base`: the interface, :class:`Provider` (``complete(request) ->
  Completion``, ``aclose()``), with :class:`CompletionRequest` and :class:`Completion`;
- :mod:`~chainfleet.providers.registry`: kind -> factory, :func:`register` and the
  :class:`ProviderConfig` a factory gets; the built-ins ``sim``, ``openai`` and ``anthropic``,
  and kinds installed packages add through the entry point group ``chainfleet.providers``;
- :mod:`~chainfleet.providers.pool`: :class:`ProviderPool`, one provider per name for a run;
- :func:`classify_error` and :func:`error_fields`: an HTTP error answer as chainfleet's error
  (:func:`scrub_secret` takes a key out of its text)
  (for the gateway of the user's own chains, :mod:`chainfleet.code.gateway`, too);
- ``sim``, ``openai``, ``anthropic``: the built-in providers (an SDK is imported when its first
  provider is made), and :mod:`~chainfleet.providers.batch`, their batch APIs.
"""

from chainfleet.providers._errors import classify as classify_error
from chainfleet.providers._errors import error_fields
from chainfleet.providers._errors import scrub as scrub_secret
from chainfleet.providers.base import Completion, CompletionRequest, Provider
from chainfleet.providers.pool import ProviderPool
from chainfleet.providers.registry import ProviderConfig, ProviderFactory, register

__all__ = [
    "Completion",
    "CompletionRequest",
    "Provider",
    "ProviderConfig",
    "ProviderFactory",
    "ProviderPool",
    "classify_error",
    "error_fields",
    "register",
    "scrub_secret",
]
