"""Provider kinds registered in Python: the config a factory gets, a did-you-mean for an unknown
kind, and no repr that shows a key. (Installed plugins in a fresh process: e2e/test_provider_plugins.py.)"""

from __future__ import annotations

import asyncio

import pytest

import chainfleet
from chainfleet import CompletionRequest, ConfigError, Pipeline, arun
from chainfleet.providers import Completion, Provider, ProviderConfig, ProviderPool, register
from chainfleet.providers.anthropic import AnthropicProvider
from chainfleet.providers.batch import batch_adapter_for
from chainfleet.providers.openai import OpenAIProvider

KEY = "sk-registry-test-0123456789-SECRET"


# -- a kind registered in Python --------------------------------------------------------------------


class Echo(Provider):
    """Says which config made it; keeps every config it was made with."""

    kind = "registered-echo"
    made: list[ProviderConfig] = []

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        Echo.made.append(config)

    async def complete(self, request: CompletionRequest) -> Completion:
        return Completion(text=f"{self.config.name}/{request.model}: {request.prompt}", model=request.model)


def test_a_kind_registered_in_python_makes_its_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    register("registered-echo", Echo)
    monkeypatch.setenv("MINE_KEY", KEY)
    monkeypatch.setenv("REGISTERED_ECHO_BASE_URL", "http://127.0.0.1:8/v1")
    monkeypatch.delenv("REGISTERED_ECHO_API_KEY", raising=False)
    pipeline = Pipeline.from_dict(
        {
            "model": "registered-echo:one",
            "timeout": 7,
            "providers": {"mine": {"kind": "registered-echo", "api_key_env": "MINE_KEY"}},
            "stages": [
                {"name": "a", "prompt": "hello {{ input }}"},
                {"name": "b", "model": "mine:two", "prompt": "{{ a }}!"},
            ],
        }
    )
    Echo.made.clear()
    report = asyncio.run(arun(pipeline, ["tea"]))
    assert report.outputs() == {"1": "mine/two: registered-echo/one: hello tea!"}
    made = {config.name: config for config in Echo.made}
    by_kind, named = made["registered-echo"], made["mine"]
    assert (by_kind.kind, by_kind.timeout) == ("registered-echo", 7)
    assert by_kind.base_url == "http://127.0.0.1:8/v1"
    assert (by_kind.api_key, by_kind.key_env) == (None, "REGISTERED_ECHO_API_KEY")
    assert (named.kind, named.base_url, named.timeout) == ("registered-echo", None, 7)
    assert (named.api_key, named.key_env) == (KEY, "MINE_KEY")
    assert KEY not in repr(named)
    with pytest.raises(ConfigError, match="REGISTERED_ECHO_API_KEY is not set"):
        by_kind.require_key()
    with pytest.raises(ConfigError, match="no batch API; run it online"):
        batch_adapter_for(Echo(named))


def test_an_unknown_kind_is_a_config_error_with_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"unknown model provider 'opnai' \(did you mean 'openai'\?\)"):
        Pipeline(model="opnai:gpt-4o", stages=[{"name": "a", "prompt": "{{ input }}"}])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"unknown provider kind 'antropic' \(did you mean 'anthropic'\?\)"):
        Pipeline.from_dict(
            {"providers": {"x": {"kind": "antropic"}}, "stages": [{"name": "a", "prompt": "{{ input }}"}]}
        )
    with pytest.raises(ValueError, match="plain name"):
        register("has:colon", Echo)


def test_no_repr_shows_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    pipeline = Pipeline(model="openai:gpt-4o", stages=[{"name": "a", "prompt": "{{ input }}"}])  # type: ignore[list-item]
    pool = ProviderPool(pipeline, clock=chainfleet.SystemClock())
    for name, cls in (("openai", OpenAIProvider), ("anthropic", AnthropicProvider)):
        config = pool.config(name)
        assert config.api_key == KEY and KEY not in repr(config)
        provider, _ = pool.for_model(f"{name}:m")
        assert isinstance(provider, cls)
        adapter = batch_adapter_for(provider)
        assert KEY not in repr(provider) and KEY not in repr(adapter) and KEY not in repr(vars(adapter))
    asyncio.run(pool.aclose())
