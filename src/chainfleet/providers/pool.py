"""The providers of one run: one per provider name, made from the registry, closed at the end.

A model string names its provider before the colon (``openai:gpt-4o``, ``local:llama3``). The
pool turns that name into the :class:`~chainfleet.providers.registry.ProviderConfig` its kind's
factory gets (a named endpoint's settings, or the ``KIND_API_KEY`` / ``KIND_BASE_URL`` variables
for a kind used by its own name), makes the provider once, and hands it to every stage that
names it. :meth:`ProviderPool.check` makes them all before the first call, so a missing key or a
bad URL stops the run at once with a line naming the pipeline file, the stage and the field.

Example::

    pool = ProviderPool(pipeline, clock=SystemClock())
    pool.check()
    provider, model = pool.for_model("openai:gpt-4o-mini")   # (the OpenAIProvider, "gpt-4o-mini")
    ...
    await pool.aclose()
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from urllib.parse import urlsplit

from chainfleet.clock import Clock
from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline, parse_model
from chainfleet.pipeline.settings import BUILTIN_PROVIDERS
from chainfleet.providers.base import Provider
from chainfleet.providers.registry import ProviderConfig, make_provider
from chainfleet.redact import ENV_NAME, clip, looks_like_key

__all__ = ["ProviderPool"]


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
        (resolved once per model string: every call of a stage asks again); for a route's
        name, its first target's."""
        found = self._resolved.get(spec)
        if found is None and spec in self.pipeline.routes:
            found = self._resolved[spec] = self.for_target(spec, 0)
        if found is None:
            # (an unknown name was refused by check(), or is one of the run's own providers)
            name, model = parse_model(spec, self.pipeline.providers, any_provider=True)
            provider = self._providers.get(name)
            if provider is None:
                provider = self._providers[name] = make_provider(self.config(name))
            found = self._resolved[spec] = (provider, model)
        return found

    def for_target(self, route: str, index: int) -> tuple[Provider, str]:
        """The provider and bare model of target ``index`` of ``route``: with its own key or URL,
        a provider of its own (two keys of one provider are two providers); else the one its
        provider name shares. ``overrides`` may hold one for ``"ROUTE[INDEX]"``."""
        name = f"{route}[{index}]"
        found = self._resolved.get(name)
        if found is not None:
            return found
        target = self.pipeline.routes[route].targets[index]
        if not target.own_endpoint and name not in self._providers:
            found = self.for_model(target.model)
        else:
            kind_name, model = parse_model(target.model, self.pipeline.providers)
            provider = self._providers.get(name)
            if provider is None:
                config = self.config(kind_name)
                where = f"routes.{route}.targets[{index}]"
                if target.base_url is not None:
                    config = replace(config, base_url=_check_url(target.base_url, f"{where}.base_url"))
                if target.api_key_env is not None:
                    key = _env_key(target.api_key_env, name, where=f"{where}.api_key_env")
                    config = replace(config, api_key=key, key_env=target.api_key_env)
                provider = self._providers[name] = make_provider(config)
            found = (provider, model)
        self._resolved[name] = found
        return found

    def check(self) -> None:
        """Make every provider the pipeline needs now, so a missing key fails before any call.

        A problem is a ``ConfigError`` naming the pipeline file, the stage and its model; a
        provider name the pipeline does not know is one only if this run was not given it.
        """
        self.pipeline.check_providers(self._providers)
        for index, stage in enumerate(self.pipeline.stages):
            if stage.is_tool:
                continue
            try:
                spec = self.pipeline.model_for(stage)
                route = self.pipeline.routes.get(spec)
                for index in range(len(route.targets) if route else 0):
                    self.for_target(spec, index)
                self.for_model(spec)
            except ConfigError as exc:
                where = f"{self.pipeline.source or 'pipeline'}: "
                if exc.where and exc.where.startswith(("providers.", "routes.")):
                    raise ConfigError(exc.reason, where=where + f"field {exc.where!r}") from exc
                # an environment variable goes into the reason: the model that reads it (which
                # may be --model's, with its own place) is the place
                reason = f"{exc.where}: {exc.reason}" if exc.where else exc.reason
                if stage.model:
                    where += f"stage {stage.name!r} (stages[{index}]), field 'model'"
                else:
                    where += "field 'model'"
                raise ConfigError(reason, where=where) from exc

    def config(self, name: str) -> ProviderConfig:
        """What the factory of provider ``name`` gets: a named endpoint's settings, or for a kind
        used by its own name the ``KIND_API_KEY`` and ``KIND_BASE_URL`` variables (a built-in
        name always means the built-in). URLs are checked; a named ``api_key_env`` must be set."""
        settings = None if name in BUILTIN_PROVIDERS else self.pipeline.providers.get(name)
        key_env: str | None
        if name == "sim":  # the simulated model reads no environment: it is the same everywhere
            kind, key_env, api_key, base_url = name, None, None, None
        elif settings is None:
            prefix = re.sub(r"[^A-Za-z0-9]", "_", name).upper()
            kind, key_env = name, f"{prefix}_API_KEY"
            api_key = os.environ.get(key_env, "").strip() or None
            base_url = _check_url(os.environ.get(f"{prefix}_BASE_URL") or None, f"{prefix}_BASE_URL")
        else:
            kind, key_env = settings.kind, settings.api_key_env
            base_url = _check_url(settings.base_url, f"providers.{name}.base_url")
            api_key = _env_key(key_env, name) if key_env else None
        return ProviderConfig(
            kind=kind,
            name=name,
            base_url=base_url,
            api_key=api_key,
            key_env=key_env,
            timeout=self.pipeline.timeout,
            api=settings.api if settings is not None else "chat",
            clock=self.clock,
            pipeline=self.pipeline,
        )

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


def _env_key(variable: str, provider: str, *, where: str | None = None) -> str:
    """The key in ``variable`` (a named endpoint's or a route target's ``api_key_env``), which
    must be set."""
    if not ENV_NAME.fullmatch(variable):
        what = (
            "the value looks like a key and is not shown"
            if looks_like_key(variable)
            else f"{clip(repr(variable), 80)} is not a variable name"
        )
        raise ConfigError(
            f"api_key_env must name an environment variable (e.g. LOCAL_KEY); {what}",
            where=where or f"providers.{provider}.api_key_env",
        )
    key = os.environ.get(variable, "").strip()
    if not key:
        raise ConfigError(f"{variable} is not set: the {provider!r} provider needs an API key")
    return key


def _check_url(url: str | None, where: str) -> str | None:
    """``url`` if an HTTP client can call it: http(s), a host, and a port (if any) from 1 to
    65535; else a ``ConfigError`` naming ``where`` (found at load, not inside the first call)."""
    if url is None:
        return None
    problem = _url_problem(url)
    if problem:
        shown = "the value looks like a key and is not shown" if looks_like_key(url) else clip(repr(url))
        raise ConfigError(f"{problem} (want e.g. http://127.0.0.1:11434/v1): {shown}", where=where)
    return url


def _url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a base URL, or None."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "not a URL"
    try:
        port = parts.port  # ValueError for a port that is not a number, or above 65535
    except ValueError:
        port = 0
    if port == 0:
        return "not a URL: its port is not a number from 1 to 65535"
    if not parts.hostname or _NOT_IN_HOST.search(parts.hostname):
        return "not a URL: no valid host name"
    return None


#: what a host name cannot hold (spaces, controls, and what a URL parser refuses)
_NOT_IN_HOST = re.compile(r"[\x00-\x20\x7f<>\"{}|\\^`]")
