"""The settings a pipeline runs with, and how a model string names its provider.

Each is a frozen pydantic model that refuses unknown keys, so a misspelt setting in a pipeline
file is an error naming it rather than a setting silently ignored:

- :class:`SimSettings`: the built-in simulated model (latency, jitter, injected failures, seed);
- :class:`ProviderSettings`: a named endpoint, e.g. a local OpenAI-compatible server;
- :class:`ModelLimits`: requests and tokens per minute for one model;
- :class:`PriceSettings`: dollars per million tokens, overriding the built-in price table;
- :class:`BatchSettings`: how batch mode forms and watches provider batch jobs.

A model is written ``PROVIDER:MODEL``; :func:`parse_model` splits it and knows the built-in
providers (:data:`BUILTIN_PROVIDERS`) and the pipeline's named ones::

    parse_model("openai:gpt-4o-mini")          # ("openai", "gpt-4o-mini")
    parse_model("local:llama3", ["local"])     # ("local", "llama3")
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
from collections.abc import Collection
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chainfleet.redact import clip

__all__ = [
    "BUILTIN_PROVIDERS",
    "BatchSettings",
    "ModelLimits",
    "OtelSettings",
    "PriceSettings",
    "ProviderSettings",
    "SimSettings",
    "UnknownProvider",
    "add_provider_kind",
    "parse_model",
    "provider_kinds",
]

BUILTIN_PROVIDERS = ("sim", "openai", "anthropic")
#: the entry point group installed packages declare provider kinds in (see chainfleet.providers.registry)
PROVIDER_GROUP = "chainfleet.providers"
#: kinds registered in Python: chainfleet.providers.registry.register adds each here
_REGISTERED_KINDS: set[str] = set()


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimSettings(_Settings):
    """The built-in simulated model: latency per call, its jitter, injected failures, seed.

    ``fail_on`` lists texts: a call whose prompt contains one of them always fails with a
    simulated 500, to rehearse what a run does with an item that cannot succeed.
    ``invalid_output_rate`` makes that share of structured replies (a stage with ``output:``)
    malformed or off-schema, decided by (seed, prompt), to rehearse repairs.
    """

    latency: float = Field(1.0, ge=0)
    jitter: float = Field(0.0, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    seed: int = 0
    fail_on: tuple[str, ...] = ()
    #: the share of structured replies that come back malformed or off-schema (to rehearse repairs)
    invalid_output_rate: float = Field(0.0, ge=0, le=1)
    #: an agent's tool turns before it answers (None: ``[[sim:tool_turns=N]]`` in the prompt,
    #: else one to three by seed and prompt)
    tool_turns: int | None = Field(None, ge=0)


class ProviderSettings(_Settings):
    """A named endpoint, e.g. a local OpenAI-compatible server. The key is read from the env.

    ``kind`` is ``openai``, ``anthropic`` or a kind an installed package registers.
    """

    kind: str
    base_url: str | None = None
    api_key_env: str | None = None
    #: how a stage with an ``output:`` schema asks this server for JSON: natively
    #: (``json_schema``: OpenAI's strict response_format, Anthropic's forced tool call), as
    #: ``json_object`` mode with the schema in the prompt, or by the ``prompt`` alone
    structured: Literal["json_schema", "json_object", "prompt"] = "json_schema"
    #: which OpenAI API a ``kind: openai`` endpoint calls: chat completions (``chat``) or the
    #: Responses API (``responses``, ``POST /v1/responses``); batch mode uses chat completions
    api: Literal["chat", "responses"] = "chat"

    @model_validator(mode="after")
    def _check_api(self) -> ProviderSettings:
        if self.api == "responses" and self.kind != "openai":
            raise ValueError(f"api: responses is an OpenAI API; a {self.kind!r} endpoint cannot call it")
        return self

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        if value in ("openai", "anthropic"):  # known without reading installed packages' metadata
            return value
        kinds = [kind for kind in provider_kinds() if kind != "sim"]
        if value not in kinds:
            hint = difflib.get_close_matches(value, kinds, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            listed = ", ".join(repr(kind) for kind in kinds)
            raise ValueError(
                f"unknown provider kind {clip(repr(value), 80)}{did}; "
                f"a named endpoint's kind is one of {listed}"
            )
        return value


class ModelLimits(_Settings):
    """Requests and tokens per minute allowed for one model."""

    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)


class OtelSettings(_Settings):
    """``otel:``: export the run's OpenTelemetry traces (as ``--otel`` does): to ``endpoint``
    (OTLP/HTTP), keeping ``sample`` of the items (failed ones always), with prompt and reply
    text when ``content``. The command line's ``--otel-*`` options win over these."""

    endpoint: str | None = None
    sample: float = Field(1.0, ge=0, le=1)
    content: bool = False


class PriceSettings(_Settings):
    """US dollars per million tokens, overriding the built-in price table."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class BatchSettings(_Settings):
    """How batch mode (``mode: batch``) forms and watches provider batch jobs.

    ``window``: seconds a chunk keeps collecting requests after its first one; ``poll`` and
    ``poll_max``: the first wait between status checks and its cap (it grows 1.5x a check);
    ``max_requests``: a chunk cap below the provider's own; ``concurrency``: the chains in flight
    in batch mode (they wait cheaply); ``sim_delay``: how long the built-in ``sim`` takes to finish
    a batch.
    """

    window: float = Field(1.0, ge=0)
    poll: float = Field(2.0, gt=0)
    poll_max: float = Field(60.0, gt=0)
    max_requests: int | None = Field(None, ge=1)
    concurrency: int = Field(10_000, ge=1)
    sim_delay: float = Field(1.0, ge=0)


def provider_kinds() -> list[str]:
    """Every kind a model string or a ``providers:`` entry may name: the built-ins, then kinds
    registered in Python and kinds installed packages declare (read from their metadata; nothing
    of theirs is imported until a run makes one)."""
    extra = (_REGISTERED_KINDS | _installed_kinds()) - set(BUILTIN_PROVIDERS)
    return [*BUILTIN_PROVIDERS, *sorted(extra)]


def add_provider_kind(kind: str) -> None:
    """Let model strings and ``providers:`` entries name ``kind`` (the provider registry calls
    this for every kind it registers)."""
    _REGISTERED_KINDS.add(kind)


@functools.cache
def _installed_kinds() -> frozenset[str]:
    return frozenset(entry.name for entry in importlib.metadata.entry_points(group=PROVIDER_GROUP))


class UnknownProvider(ValueError):
    """A model string whose provider is neither built in, registered, installed nor named by
    the pipeline. A run given ``providers={name: instance}`` from Python knows it after all,
    so a pipeline keeps this problem until the run says which names it brings."""

    def __init__(self, message: str, provider: str, *, near: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        #: the known name it is one typo from, if any
        self.near = near


def parse_model(spec: str, named: Collection[str] = (), *, any_provider: bool = False) -> tuple[str, str]:
    """Split ``"openai:gpt-4o-mini"`` into ``("openai", "gpt-4o-mini")``; ``"sim"`` is ``("sim", "sim")``.

    Raises ``ValueError`` for a malformed string and :class:`UnknownProvider` for an unknown
    provider (unless ``any_provider``); ``named`` are the pipeline's own endpoints.
    """
    provider, sep, model = spec.partition(":")
    if not sep:
        if provider == "sim":
            return "sim", "sim"
        if difflib.get_close_matches(provider, ["sim"], n=1, cutoff=0.6):  # "smi", "sims", "Sim"
            raise ValueError(f"model {spec!r} has no provider (did you mean 'sim'?)")
        raise ValueError(
            f"model {spec!r} has no provider: write PROVIDER:MODEL, e.g. openai:{spec} "
            f"(providers: {', '.join([*provider_kinds(), *named])})"
        )
    known = [*provider_kinds(), *named]
    if not any_provider and provider not in BUILTIN_PROVIDERS and provider not in known:
        hint = difflib.get_close_matches(provider, known, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        message = f"unknown model provider {provider!r}{did}; known: {', '.join(known)}"
        raise UnknownProvider(message, provider, near=hint[0] if hint else None)
    if not model:
        raise ValueError(f"model {spec!r} names no model after the colon")
    return provider, model
