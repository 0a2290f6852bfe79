"""chainfleet's OpenAI and Anthropic adapters, with the official SDKs, over real loopback HTTP
against ``chainfleet sim-server``: every path a real provider can take, each mapped to the
error class that decides what happens next.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet import (
    AuthFailed,
    CompletionRequest,
    ConfigError,
    ConnectionFailed,
    ContentFiltered,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    Pipeline,
    QuotaExhausted,
    RateLimited,
    ServerError,
    Timeout,
    arun,
)
from chainfleet.errors import CallError
from chainfleet.limits.headers import parse_rate_limits
from chainfleet.providers import Provider, ProviderPool
from chainfleet.providers.anthropic import AnthropicProvider
from chainfleet.providers.openai import OpenAIProvider
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from chainfleet.sim.text import count_tokens
from sim_cli import point_sdks_at

KEY = "sk-test-0123456789abcdef-SECRET"
GPT = "gpt-sim"
CLAUDE = "claude-sim-test"  # not a real model name: the SDK warns about deprecated ones


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,)))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread, monkeypatch: pytest.MonkeyPatch) -> SimServerThread:
    """The shared server, reset to a clean state, with the SDKs' env pointing at it."""
    point_sdks_at(server, monkeypatch, KEY)
    return server


def openai_provider(sim: SimServerThread, key: str = KEY, timeout: float = 10) -> OpenAIProvider:
    return OpenAIProvider(api_key=key, base_url=f"{sim.url}/v1", timeout=timeout)


def anthropic_provider(sim: SimServerThread, key: str = KEY, timeout: float = 10) -> AnthropicProvider:
    return AnthropicProvider(api_key=key, base_url=sim.url, timeout=timeout)


def call(provider: Provider, prompt: str, model: str, **kw: Any) -> Any:
    async def main() -> Any:
        try:
            return await provider.complete(CompletionRequest(model=model, prompt=prompt, **kw))
        finally:
            await provider.aclose()

    return asyncio.run(main())


def both(sim: SimServerThread, **kw: Any) -> list[tuple[Provider, str]]:
    return [(openai_provider(sim, **kw), GPT), (anthropic_provider(sim, **kw), CLAUDE)]


def test_a_completion_carries_text_usage_and_rate_limit_headers(sim: SimServerThread) -> None:
    sim.configure(rpm=600, tpm=100_000)
    for provider, model in both(sim):
        done = call(provider, "Research tea: the key facts.", model, system="Be exact.", max_tokens=300)
        assert done.text.startswith("<!-- simulated by chainfleet sim")
        assert done.input_tokens == count_tokens("Be exact.") + count_tokens("Research tea: the key facts.")
        assert done.output_tokens == count_tokens(done.text)
        limits = parse_rate_limits(done.headers, 0.0 if model == GPT else __import__("time").time())
        assert limits.limit_requests == 600 and limits.limit_tokens == 100_000
        assert limits.remaining_requests is not None and limits.remaining_requests < 600


@pytest.mark.parametrize(
    ("trigger", "error", "status"),
    [
        ("[[sim:500]]", ServerError, 500),
        ("[[sim:503]]", Overloaded, 503),
        ("[[sim:429]]", RateLimited, 429),
        ("[[sim:400]]", InvalidRequest, 400),
        ("[[sim:quota]]", QuotaExhausted, None),
        ("[[sim:content_filter]]", ContentFiltered, 400),
    ],
)
def test_each_error_maps_to_its_class(
    sim: SimServerThread, trigger: str, error: type[CallError], status: int | None
) -> None:
    for provider, model in both(sim):
        with pytest.raises(error) as info:
            call(provider, f"Research tea {trigger}", model)
        if status is not None:
            assert info.value.status == status
        assert KEY not in str(info.value) and KEY not in repr(info.value)


def test_a_429_carries_the_servers_wait(sim: SimServerThread) -> None:
    for provider, model in both(sim):
        with pytest.raises(RateLimited) as info:
            call(provider, "Research tea [[sim:429]]", model)
        assert info.value.retry_after == pytest.approx(1.0)


def test_anthropic_overload_529(sim: SimServerThread) -> None:
    with pytest.raises(Overloaded) as info:
        call(anthropic_provider(sim), "tea [[sim:529]]", CLAUDE)
    assert info.value.status == 529


def test_a_wrong_key_is_fatal_and_never_echoed(sim: SimServerThread) -> None:
    wrong = "sk-wrong-key-ABCDEFGHIJKLMNOP"
    for provider, model in both(sim, key=wrong):
        with pytest.raises(AuthFailed) as info:
            call(provider, "Research tea", model)
        assert wrong not in str(info.value) and wrong[:12] not in str(info.value)
        assert wrong not in repr(provider)


def test_an_unknown_model_is_fatal(sim: SimServerThread) -> None:
    sim.configure(models=(GPT, CLAUDE))
    for provider, _ in both(sim):
        with pytest.raises(ModelNotFound):
            call(provider, "Research tea", "no-such-model")


def test_timeout_dropped_connection_and_malformed_body_are_retryable(sim: SimServerThread) -> None:
    sim.configure(slow_seconds=3.0)
    for provider, model in both(sim, timeout=0.5):
        with pytest.raises(Timeout):
            call(provider, "tea [[sim:slow]]", model)
    for trigger in ("[[sim:drop]]", "[[sim:malformed]]"):
        expected = ConnectionFailed if "drop" in trigger else ServerError
        for provider, model in both(sim):
            with pytest.raises(expected):
                call(provider, f"tea {trigger}", model)


def test_one_request_above_tokens_per_minute_is_never_retried(sim: SimServerThread) -> None:
    sim.configure(tpm=1_000)
    with pytest.raises(InvalidRequest, match="Request too large"):
        call(openai_provider(sim), "Research tea", GPT, max_tokens=5_000)


def test_missing_key_and_bad_urls_are_found_before_any_call(
    sim: SimServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(
        model="openai:gpt-sim",
        stages=[{"name": "a", "prompt": "{{ input }}"}],  # type: ignore[list-item]
    )
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        ProviderPool(pipeline, clock=None).check()  # type: ignore[arg-type]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:11434")
    with pytest.raises(ConfigError, match="not a URL") as info:
        ProviderPool(pipeline, clock=None).check()  # type: ignore[arg-type]
    assert "OPENAI_BASE_URL" in str(info.value)
    assert sim.stats()["calls"] == 0


def test_a_named_openai_compatible_endpoint(sim: SimServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_KEY", KEY)
    pipeline = Pipeline.from_dict(
        {
            "model": "local:llama-sim",
            "providers": {
                "local": {"kind": "openai", "base_url": f"{sim.url}/v1", "api_key_env": "LOCAL_KEY"}
            },
            "input": "topic",
            "stages": [{"name": "research", "prompt": "Research {{ topic }}."}],
        }
    )
    report = asyncio.run(arun(pipeline, ["tea", "coffee"]))
    assert report.items_succeeded == 2
    assert sim.stats()["ok"] == 2
    monkeypatch.delenv("LOCAL_KEY")
    with pytest.raises(ConfigError, match="LOCAL_KEY is not set"):
        asyncio.run(arun(pipeline, ["tea"]))


def content(model: str, **extra: Any) -> Pipeline:
    return Pipeline.from_dict(
        {
            "name": "content",
            "model": model,
            "input": "topic",
            "stages": [
                {"name": "research", "prompt": "Research {{ topic }}: the key facts.", "max_tokens": 400},
                {"name": "write", "prompt": "Write an article on {{ topic }} from:\n{{ research }}"},
                {"name": "edit", "prompt": "Edit this draft:\n{{ write }}"},
            ],
            **extra,
        }
    )


TOPICS = [f"subject {i}" for i in range(1, 9)]


@pytest.mark.parametrize("model", [f"openai:{GPT}", f"anthropic:{CLAUDE}"])
def test_the_content_pipeline_end_to_end(sim: SimServerThread, model: str) -> None:
    report = asyncio.run(arun(content(model), TOPICS, concurrency=4))
    assert report.items_succeeded == 8 and report.exit_code == 0
    assert report.calls["total"] == 24
    assert report.tokens["input"] > 0 and report.tokens["output"] > 0
    assert all(text.startswith("<!-- simulated") for text in report.outputs().values() if text)
    assert sim.stats()["ok"] == 24


def test_a_run_with_20_percent_injected_500s_completes_every_item(sim: SimServerThread) -> None:
    sim.configure(error_rate=0.2, seed=7)
    report = asyncio.run(
        arun(content(f"openai:{GPT}"), TOPICS * 3, concurrency=8, max_attempts=10, retry_passes=2)
    )
    assert report.items_succeeded == 24 and report.items_failed == 0
    assert report.calls["retried"] > 0
    assert sim.stats()["status"].get("500", 0) == report.calls["retried"]


def test_a_429_closes_the_models_gate_and_the_run_still_completes(sim: SimServerThread) -> None:
    sim.configure(rpm=1200)  # 20 a second, 40 in any 2 s window
    report = asyncio.run(arun(content(f"openai:{GPT}"), TOPICS * 4, concurrency=16))
    assert report.items_succeeded == 32
    models = report.rates["models"]
    assert models[f"openai:{GPT}"]["learned"] is True  # told nothing, it read the headers
    assert report.rates["rate_limited_pct"] <= 10


def test_a_wrong_key_stops_the_run_after_a_handful_of_calls(sim: SimServerThread, tmp_path: Path) -> None:
    wrong = "sk-revoked-key-9876543210-TOPSECRET"
    pipeline_file = tmp_path / "content.yaml"
    pipeline_file.write_text(
        "name: content\nmodel: openai:gpt-sim\ninput: topic\nstages:\n"
        "  - name: research\n    prompt: 'Research {{ topic }}'\n"
        "  - name: write\n    prompt: 'Write on {{ topic }} from {{ research }}'\n",
        encoding="utf-8",
    )
    topics = tmp_path / "topics.txt"
    topics.write_text("\n".join(f"topic {i}" for i in range(200)) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    env = {
        "PATH": str(Path(sys.executable).parent),
        "OPENAI_BASE_URL": f"{sim.url}/v1",
        "OPENAI_API_KEY": wrong,
    }
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "chainfleet"),
            "run",
            str(pipeline_file),
            "-i",
            str(topics),
            "-c",
            "5",
            "--out",
            str(out),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert sim.stats()["calls"] <= 5  # the calls in flight when the first 401 came back
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the run stopped" in errors[0] and "401" in errors[0]
    statuses = [json.loads(line)["status"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(statuses) == 200 and statuses.count("skipped") >= 195
    # the key appears nowhere: not on screen, not in any file of the output folder
    assert wrong not in result.stdout + result.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert wrong.encode() not in path.read_bytes(), path
