"""Model backends behind one interface, found by the name before the colon of a model string."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from chainfleet.clock import Clock
from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline, parse_model
from chainfleet.providers.base import Completion, CompletionRequest, Provider
from chainfleet.redact import ENV_NAME, clip, looks_like_key

__all__ = ["Completion", "CompletionRequest", "Provider", "ProviderPool"]


def _env_key(variable: str, provider: str) -> str:
    if not ENV_NAME.fullmatch(variable):
        what = (
            "the value looks like a key and is not shown"
            if looks_like_key(variable)
            else f"{clip(repr(variable), 80)} is not a variable name"
        )
        raise ConfigError(
            f"api_key_env must name an environment variable (e.g. LOCAL_KEY); {what}",
            where=f"providers.{provider}.api_key_env",
        )
    key = os.environ.get(variable, "").strip()
    if not key:
        raise ConfigError(f"{variable} is not set: the {provider!r} provider needs an API key")
    return key


def _check_url(url: str | None, where: str) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        shown = "the value looks like a key and is not shown" if looks_like_key(url) else clip(repr(url))
        raise ConfigError(f"not a URL (want e.g. http://127.0.0.1:11434/v1): {shown}", where=where)
    return url


def _adapter(kind: str, name: str, key: str, base_url: str | None, timeout: float) -> Provider:
    if kind == "openai":
        from chainfleet.providers.openai import OpenAIProvider

        return OpenAIProvider(api_key=key, base_url=base_url, timeout=timeout, name=name)
    from chainfleet.providers.anthropic import AnthropicProvider

    return AnthropicProvider(api_key=key, base_url=base_url, timeout=timeout, name=name)


class ProviderPool:
    """One provider instance per provider name for a run, made on first use, closed at the end.

    ``overrides`` maps a provider name to a ready instance (tests and the Python API use it to
    plug in their own ``Provider``).
    """

    def __init__(
        self, pipeline: Pipeline, *, clock: Clock, overrides: dict[str, Provider] | None = None
    ) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self._providers: dict[str, Provider] = dict(overrides or {})
        self._resolved: dict[str, tuple[Provider, str]] = {}

    def for_model(self, spec: str) -> tuple[Provider, str]:
        """The provider and the bare model name for a model string like ``openai:gpt-4o``
        (resolved once per model string: every call of a stage asks again)."""
        found = self._resolved.get(spec)
        if found is None:
            name, model = parse_model(spec, self.pipeline.providers)
            provider = self._providers.get(name)
            if provider is None:
                provider = self._providers[name] = self._make(name)
            found = self._resolved[spec] = (provider, model)
        return found

    def check(self) -> None:
        """Make every provider the pipeline needs now, so a missing key fails before any call.

        A problem is a ``ConfigError`` naming the pipeline file, the stage and its model.
        """
        for index, stage in enumerate(self.pipeline.stages):
            if stage.is_tool:
                continue
            try:
                self.for_model(self.pipeline.model_for(stage))
            except ConfigError as exc:
                where = f"{self.pipeline.source or 'pipeline'}: "
                if exc.where and exc.where.startswith("providers."):
                    raise ConfigError(exc.reason, where=where + f"field {exc.where!r}") from exc
                if exc.where:  # an environment variable: name it alone
                    raise
                if stage.model:
                    where += f"stage {stage.name!r} (stages[{index}]), field 'model'"
                else:
                    where += "field 'model'"
                raise ConfigError(exc.reason, where=where) from exc

    def _make(self, name: str) -> Provider:
        if name == "sim":
            from chainfleet.providers.sim import SimProvider

            return SimProvider(self.pipeline.sim, clock=self.clock)
        timeout = self.pipeline.timeout
        if name in ("openai", "anthropic"):
            prefix = name.upper()
            key = _env_key(f"{prefix}_API_KEY", name)
            base_url = _check_url(os.environ.get(f"{prefix}_BASE_URL") or None, f"{prefix}_BASE_URL")
            return _adapter(name, name, key, base_url, timeout)
        settings = self.pipeline.providers[name]
        base_url = _check_url(settings.base_url, f"providers.{name}.base_url")
        if settings.api_key_env:
            key = _env_key(settings.api_key_env, name)
        else:  # local servers (Ollama, vLLM, llama.cpp) often need no key; the SDKs want one
            key = "no-key"
        return _adapter(settings.kind, name, key, base_url, timeout)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
