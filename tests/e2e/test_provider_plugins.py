"""Provider kinds an installed package declares in the ``chainfleet.providers`` entry point group,
used by a real ``chainfleet run`` in a fresh process; an unknown or broken kind is exit 2 with one
line; ``--help`` and a sim run import no SDK and no plugin. (In-process: unit/providers/test_registry.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import chainfleet
from conftest import read_results

KEY = "sk-registry-test-0123456789-SECRET"
CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")

#: an installed provider package: one module and its dist-info, as pip would leave them
TINY_MODULE = """
from chainfleet.providers import Completion, CompletionRequest, Provider, ProviderConfig


class TinyProvider(Provider):
    kind = "tiny"

    def __init__(self, config: ProviderConfig) -> None:
        self.name = config.name
        self.base_url = config.base_url

    async def complete(self, request: CompletionRequest) -> Completion:
        text = f"tiny {request.model} via {self.name} at {self.base_url}: {request.prompt.upper()}"
        return Completion(text=text, input_tokens=1, output_tokens=1, model=request.model)
"""
TINY_ENTRY_POINTS = """\
[chainfleet.providers]
tiny = tiny_provider:TinyProvider
broken = tiny_provider_gone:TinyProvider
"""
TINY_PIPELINE = """\
name: tiny
model: "tiny:small"
input: topic
providers:
  loud: {kind: tiny, base_url: "http://127.0.0.1:9/v1"}
stages:
  - name: shout
    prompt: "shout {{ topic }}"
  - name: again
    model: "loud:big"
    prompt: "again {{ shout }}"
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding the installed package ``tiny-provider`` 0.1 (module and dist-info)."""
    folder = tmp_path / "site"
    info = folder / "tiny_provider-0.1.dist-info"
    info.mkdir(parents=True)
    (folder / "tiny_provider.py").write_text(TINY_MODULE, encoding="utf-8")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-provider\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(TINY_ENTRY_POINTS, encoding="utf-8")
    return folder


def with_site(site: Path) -> dict[str, str]:
    """The environment with ``site`` and this chainfleet's sources first on the path."""
    source = str(Path(chainfleet.__file__).parents[1])
    paths = [str(site), source, os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def chainfleet_run(site: Path, pipeline: str, folder: Path) -> subprocess.CompletedProcess[str]:
    (folder / "p.yaml").write_text(pipeline, encoding="utf-8")
    (folder / "topics.txt").write_text("tea\ncoffee\n", encoding="utf-8")
    command = [CHAINFLEET, "run", str(folder / "p.yaml"), "-i", str(folder / "topics.txt")]
    return subprocess.run(
        [*command, "--out", str(folder / "out"), "-q"],
        env=with_site(site),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- an installed package ---------------------------------------------------------------------------


def test_an_installed_provider_package_is_used_by_its_kind(site: Path, tmp_path: Path) -> None:
    done = chainfleet_run(site, TINY_PIPELINE, tmp_path)
    assert done.returncode == 0, done.stderr
    outputs = {r["input"]["topic"]: r["outputs"] for r in read_results(tmp_path / "out")}
    shout = "tiny small via tiny at None: SHOUT TEA"
    assert outputs["tea"] == {
        "shout": shout,
        "again": f"tiny big via loud at http://127.0.0.1:9/v1: AGAIN {shout.upper()}",
    }
    assert outputs["coffee"]["shout"] == "tiny small via tiny at None: SHOUT COFFEE"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (("tiny:small", "tiyn:small"), ("field 'model'", "unknown model provider 'tiyn'", "'tiny'?")),
        (("kind: tiny", "kind: tinny"), ("field 'providers.loud.kind'", "unknown provider kind 'tinny'")),
        (("tiny:small", "broken:small"), ("field 'model'", "'broken'", "could not be loaded")),
    ],
    ids=["model", "endpoint", "broken-package"],
)
def test_an_unknown_or_broken_kind_is_exit_2_with_one_line(
    site: Path, tmp_path: Path, change: tuple[str, str], says: tuple[str, ...]
) -> None:
    done = chainfleet_run(site, TINY_PIPELINE.replace(*change), tmp_path)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {tmp_path / 'p.yaml'}"), lines[0]
    for part in says:
        assert part in lines[0], lines[0]
    assert not (tmp_path / "out" / "results.jsonl").exists()


#: --help and a sim run, in one process, with the tiny package installed
PROBE = """
import sys
from chainfleet.cli import main
pipeline, items, out = sys.argv[1:4]
for argv in (["--help"], ["run", pipeline, "-i", items, "--out", out, "-q"]):
    sys.argv = ["chainfleet", *argv]
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), (argv, exc.code)
print(sorted({name.partition(".")[0] for name in sys.modules} & {"openai", "anthropic", "tiny_provider"}))
"""


def test_help_and_a_sim_run_import_no_sdk_and_no_plugin(site: Path, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        'model: sim\nsim: {latency: 0}\ninput: topic\nstages:\n  - {name: a, prompt: "{{ topic }}"}\n'
    )
    (tmp_path / "topics.txt").write_text("tea\n")
    args = [str(tmp_path / "p.yaml"), str(tmp_path / "topics.txt"), str(tmp_path / "out")]
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=with_site(site),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1] == "[]"
    assert len(read_results(tmp_path / "out")) == 1
