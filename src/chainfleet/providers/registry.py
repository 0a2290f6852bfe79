"""Provider kinds, found by name: ``sim``, ``openai``, ``anthropic`` and any kind a package adds.

A *kind* is the word before the colon of a model string (``openai:gpt-4o-mini``) or the
``kind:`` of a named endpoint in a pipeline's ``providers:`` block. Each kind maps to a *factory*:
any callable that takes a :class:`ProviderConfig` and returns a
:class:`~chainfleet.providers.base.Provider` (a ``Provider`` subclass whose ``__init__`` takes
the config is one). :class:`~chainfleet.providers.pool.ProviderPool` calls it once per provider
name in a run, when the run starts.

What a factory receives (:class:`ProviderConfig`):

- ``kind`` and ``name``: the kind, and the word the model string used (the kind itself, or a
  named endpoint such as ``local``);
- ``base_url`` and ``api_key``: a named endpoint's ``base_url`` and the key read from its
  ``api_key_env``; for a kind used by its own name, ``KIND_BASE_URL`` and ``KIND_API_KEY`` from
  the environment (``OPENAI_BASE_URL``, ``TINY_API_KEY`` ...), as the official SDKs read theirs.
  A URL is checked before the factory sees it; a key may be ``None`` (none set), and
  :meth:`ProviderConfig.require_key` turns that into the ``ConfigError`` that names the variable;
- ``timeout``: the pipeline's seconds per call; ``clock``: the run's clock (sleep through it,
  so a virtual clock drives the provider too); ``pipeline``: the whole pipeline, for settings of
  its own (``sim`` reads ``pipeline.sim``).

The built-ins are registered here as small functions that import their module (and so its SDK)
only when a provider of that kind is made: ``chainfleet --help`` and a run on ``sim`` never
import ``openai`` or ``anthropic``. A package adds a kind in the entry point group
``chainfleet.providers`` (as ``llm`` plugins do); the group is read the first time a kind that is
not registered is asked for, and only the entry point of that kind is imported.

Example, a package ``tiny_provider``::

    # tiny_provider.py
    from chainfleet.providers import Completion, CompletionRequest, Provider, ProviderConfig

    class TinyProvider(Provider):
        kind = "tiny"

        def __init__(self, config: ProviderConfig) -> None:
            self.name = config.name

        async def complete(self, request: CompletionRequest) -> Completion:
            return Completion(text=request.prompt.upper(), input_tokens=1, output_tokens=1)

    # its pyproject.toml
    [project.entry-points."chainfleet.providers"]
    tiny = "tiny_provider:TinyProvider"

and a pipeline then names ``model: tiny:small``, or ``providers: {fast: {kind: tiny}}`` and
``model: fast:small``. In Python, without a package: ``register("tiny", TinyProvider)``.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from chainfleet.clock import Clock, SystemClock
from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline
from chainfleet.pipeline.settings import PROVIDER_GROUP, add_provider_kind, provider_kinds
from chainfleet.providers.base import Provider
from chainfleet.redact import clip

__all__ = ["ProviderConfig", "ProviderFactory", "factory_for", "make_provider", "register"]

#: what local servers (Ollama, vLLM, llama.cpp) get for a key when a named endpoint sets no
#: ``api_key_env``: they often need none, but the SDKs want one
NO_KEY = "no-key"
_KIND = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


@dataclass(frozen=True, kw_only=True)
class ProviderConfig:
    """What a factory is given to make one provider for a run; its repr never shows the key.

    Example::

        config = ProviderConfig(kind="openai", name="local", base_url="http://127.0.0.1:11434/v1")
        provider = make_provider(config)
    """

    kind: str
    #: the word before the colon in the model string: the kind itself, or a named endpoint's name
    name: str
    base_url: str | None = None
    #: the key read from ``key_env``; None when none is set
    api_key: str | None = field(default=None, repr=False)
    #: where the key was looked for: ``api_key_env``, or ``KIND_API_KEY`` for a kind used by name
    key_env: str | None = None
    timeout: float = 120.0
    #: a named endpoint's ``api``: ``chat`` (chat completions) or ``responses`` (OpenAI's
    #: Responses API); kinds other than ``openai`` ignore it
    api: str = "chat"
    clock: Clock = field(default_factory=SystemClock, repr=False)
    pipeline: Pipeline | None = field(default=None, repr=False)

    def require_key(self, default: str | None = None) -> str:
        """The API key; ``default`` when no variable was named for one (a named endpoint without
        ``api_key_env``); else a ``ConfigError`` that says which variable to set."""
        if self.api_key:
            return self.api_key
        if self.key_env is None:
            if default is not None:
                return default
            raise ConfigError(
                f"the {self.name!r} provider needs an API key: name its variable with api_key_env",
                where=f"providers.{self.name}.api_key_env",
            )
        raise ConfigError(f"{self.key_env} is not set: the {self.name!r} provider needs an API key")


#: makes a provider from its config: a function, or a Provider class whose __init__ takes it
ProviderFactory = Callable[[ProviderConfig], Provider]

_factories: dict[str, ProviderFactory] = {}


def register(kind: str, factory: ProviderFactory) -> None:
    """Make ``kind`` a provider kind: model strings ``KIND:MODEL`` and named endpoints with
    ``kind: KIND`` are then made by ``factory``. Registering a kind again replaces its factory.

    Register before the pipeline is built: loading a pipeline checks the kinds it names.
    """
    if not _KIND.fullmatch(kind):
        raise ValueError(f"a provider kind is a plain name (letters, digits, _ and -): {clip(repr(kind))}")
    _factories[kind] = factory
    add_provider_kind(kind)


def factory_for(kind: str) -> ProviderFactory:
    """The factory of ``kind``: registered, or loaded from the installed package that declares
    it; a ``ConfigError`` (with a did-you-mean) for a kind nothing provides."""
    factory = _factories.get(kind) or _load_installed(kind)
    if factory is None:
        known = provider_kinds()
        hint = difflib.get_close_matches(kind, known, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"unknown provider kind {clip(repr(kind), 80)}{did}; known: {', '.join(known)}")
    return factory


def make_provider(config: ProviderConfig) -> Provider:
    """A new provider of ``config.kind``, made by its factory."""
    provider = factory_for(config.kind)(config)
    if not isinstance(provider, Provider):
        raise ConfigError(
            f"the {config.kind!r} provider's factory returned {clip(type(provider).__name__, 80)}, "
            "not a chainfleet Provider"
        )
    return provider


def _load_installed(kind: str) -> ProviderFactory | None:
    """Import the factory an installed package declares for ``kind`` and register it (None: no
    package declares it). A package that fails to import is a ``ConfigError`` naming it."""
    for entry in importlib.metadata.entry_points(group=PROVIDER_GROUP, name=kind):
        try:
            factory = entry.load()
        except Exception as exc:
            raise ConfigError(
                f"provider kind {kind!r} ({entry.value}) could not be loaded: "
                f"{type(exc).__name__}: {clip(str(exc))}"
            ) from exc
        if not callable(factory):
            raise ConfigError(f"provider kind {kind!r} ({entry.value}) is not a factory: not callable")
        register(kind, factory)
        return factory  # type: ignore[no-any-return]
    return None


# -- the built-in kinds: each imports its module (and SDK) only when it makes a provider ----------


def _sim(config: ProviderConfig) -> Provider:
    from chainfleet.providers.sim import SimProvider

    settings = config.pipeline.sim if config.pipeline is not None else None
    return SimProvider(settings, clock=config.clock)


def _openai(config: ProviderConfig) -> Provider:
    from chainfleet.providers.openai import OpenAIProvider

    key = config.require_key(default=NO_KEY)
    if config.api == "responses":
        from chainfleet.providers.openai_responses import OpenAIResponsesProvider

        return OpenAIResponsesProvider(
            api_key=key, base_url=config.base_url, timeout=config.timeout, name=config.name
        )
    return OpenAIProvider(api_key=key, base_url=config.base_url, timeout=config.timeout, name=config.name)


def _anthropic(config: ProviderConfig) -> Provider:
    from chainfleet.providers.anthropic import AnthropicProvider

    key = config.require_key(default=NO_KEY)
    return AnthropicProvider(api_key=key, base_url=config.base_url, timeout=config.timeout, name=config.name)


register("sim", _sim)
register("openai", _openai)
register("anthropic", _anthropic)
