"""A base_url with a bad port or host is a config error at load (exit 2), before any call."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet.cli import cli

BAD_URLS = ["http://127.0.0.1:99999/v1", "http://127.0.0.1:80x/v1", "http://127.0.0.1:0/v1", "http://a b/v1"]


def run(tmp_path: Path, pipeline: str, *args: str) -> Result:
    (tmp_path / "p.yaml").write_text(pipeline, encoding="utf-8")
    (tmp_path / "t.txt").write_text("bees\nants\n", encoding="utf-8")
    p, t, out = (str(tmp_path / name) for name in ("p.yaml", "t.txt", "out"))
    return CliRunner().invoke(cli, ["run", p, "-i", t, "--out", out, *args])


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_base_url_of_a_named_provider_exits_2_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("LOCAL_KEY", "dummy")
    pipeline = (
        "model: local:llama\ninput: topic\n"
        f"providers:\n  local: {{kind: openai, base_url: '{url}', api_key_env: LOCAL_KEY}}\n"
        "stages:\n  - {name: a, prompt: 'A {{ topic }}'}\n"
    )
    done = run(tmp_path, pipeline)
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and "providers.local.base_url" in lines[0] and "not a URL" in lines[0]
    assert "Traceback" not in done.output and not (tmp_path / "out").exists()


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_openai_base_url_variable_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    pipeline = "model: sim\ninput: topic\nstages:\n  - {name: a, prompt: 'A {{ topic }}'}\n"
    done = run(tmp_path, pipeline, "--model", "openai:gpt-4o-mini")
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and "OPENAI_BASE_URL" in lines[0] and "not a URL" in lines[0]
    assert "Traceback" not in done.output and not (tmp_path / "out").exists()


def test_a_good_base_url_with_a_port_and_an_ipv6_host_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chainfleet import Pipeline
    from chainfleet.providers import ProviderPool

    monkeypatch.setenv("LOCAL_KEY", "dummy")
    for url in ("http://127.0.0.1:11434/v1", "http://[::1]:8080/v1", "https://api.example.com/v1"):
        pipeline = Pipeline.from_dict(
            {
                "model": "local:llama",
                "providers": {"local": {"kind": "openai", "base_url": url, "api_key_env": "LOCAL_KEY"}},
                "input": "topic",
                "stages": [{"name": "a", "prompt": "A {{ topic }}"}],
            }
        )
        assert ProviderPool(pipeline, clock=None).config("local").base_url == url  # type: ignore[arg-type]
