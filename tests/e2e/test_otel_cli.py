"""``--otel`` at the command line, without a receiver: a collector that is down costs one warning
and no item; a bad option is one line and exit 2; a run without tracing never imports
OpenTelemetry; a code chain's calls nest under its item, replayed ones marked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import chainfleet
from chainfleet.runner.core import Runner
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from chainfleet.trace.otel import OtelTracer, TraceOptions

SRC = str(Path(__file__).resolve().parents[2] / "src")
KEY = "sk-sim-otel-0123456789"

LAUNCH = """\
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted(sys.modules))))
sys.argv[0] = "chainfleet"
from chainfleet.cli import main
main()
"""


def chainfleet_cli(
    tmp_path: Path, *args: str | Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``chainfleet ARGS`` in a child process: its result and the top-level packages it imported."""
    listing = tmp_path / "modules.json"
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, *map(str, args)],
        capture_output=True,
        text=True,
        env={**base, "PYTHONPATH": SRC, "MODULES_OUT": str(listing), **env},
        cwd=tmp_path,
        timeout=180,
    )
    names = json.loads(listing.read_text()) if listing.exists() else []
    return proc, {name.split(".")[0] for name in names}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_a_collector_that_is_down_costs_one_warning_and_no_item(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    out = tmp_path / "out"
    endpoint = f"http://127.0.0.1:{closed_port()}"
    proc, imported = chainfleet_cli(
        tmp_path, "run", write_pipeline(), "-i", topics_file(["tea", "salt", "bees"]), "-o", out, "-q",
        "--otel", "--otel-endpoint", endpoint,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in results(out)] == ["succeeded"] * 3
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, proc.stderr
    assert endpoint in warnings[0] and "not reachable" in warnings[0] and "connection refused" in warnings[0]
    assert "Traceback" not in proc.stderr and "Failed to export" not in proc.stderr
    assert "opentelemetry" in imported  # (it really was tracing)


def test_the_environments_endpoint_turns_tracing_on(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    proc, _ = chainfleet_cli(
        tmp_path, "run", write_pipeline(), "-i", topics_file(["tea"]), "-o", tmp_path / "out", "-q",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert f"the collector at {endpoint} is not reachable" in proc.stderr


def test_a_run_without_otel_never_imports_opentelemetry(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    proc, imported = chainfleet_cli(
        tmp_path, "run", write_pipeline(), "-i", topics_file(["tea"]), "-o", "out"
    )
    assert proc.returncode == 0, proc.stderr
    assert "opentelemetry" not in imported
    proc, imported = chainfleet_cli(tmp_path, "run", "--help")
    assert "--otel-sample" in proc.stdout and "opentelemetry" not in imported


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--otel-sample", "2"], "error: --otel-sample: 2 is not a share of items between 0 and 1"),
        (["--otel-sample", "-0.5"], "error: --otel-sample: -0.5 is not a share of items between 0 and 1"),
        (["--otel-endpoint", "127.0.0.1:4318"], "error: --otel-endpoint: '127.0.0.1:4318' is not an http"),
    ],
)
def test_a_bad_tracing_option_is_one_line_and_exit_2(
    tmp_path: Path,
    write_pipeline: Callable[..., Path],
    topics_file: Callable[..., Path],
    args: list[str],
    says: str,
) -> None:
    proc, _ = chainfleet_cli(tmp_path, "run", write_pipeline(), "-i", topics_file(["tea"]), *args)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(says)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_python_chains_calls_nest_under_its_item_and_replays_are_marked(tmp_path: Path) -> None:
    """The Python door: each SDK call is a chat span under its item's root; the retry pass
    answers the first run's calls from the journal, and those spans say so."""
    failed: set[str] = set()
    with SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0)) as sim:

        async def article(topic: str, fleet: chainfleet.Fleet) -> str:
            client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY, max_retries=0)
            with fleet.stage("research"):
                reply = await client.chat.completions.create(
                    model="gpt-4o-mini",
                    max_tokens=100,
                    messages=[{"role": "user", "content": f"On {topic}."}],
                )
            if topic == "tea" and topic not in failed:
                failed.add(topic)
                raise RuntimeError("a bug in the chain, the first time")
            return reply.choices[0].message.content or ""

        exporter = InMemorySpanExporter()

        def start(runner: Runner) -> None:
            runner.ctx.tracer = OtelTracer(
                TraceOptions(endpoint="http://127.0.0.1:9"),
                run_id=runner.run_id,
                project="own",
                clock=runner.ctx.clock,
                exporter=exporter,
                metric_reader=InMemoryMetricReader(),
            )

        report = chainfleet.run(article, ["tea", "salt"], on_start=start, out=tmp_path / "out")

    assert report.items_succeeded == 2
    spans = exporter.get_finished_spans()
    roots = {s.attributes["chainfleet.item.id"]: s for s in spans if s.parent is None}
    assert sorted(roots) == ["1", "2"]  # one trace per item, across the retry pass

    def under(root: Any) -> list[Any]:
        return [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]

    tea = under(roots["1"])
    assert [s.name for s in tea] == ["chat gpt-4o-mini", "chat gpt-4o-mini"]
    made, replayed = sorted(tea, key=lambda s: s.start_time or 0)
    assert made.attributes["gen_ai.provider.name"] == "openai"
    assert made.attributes["gen_ai.usage.output_tokens"] > 0
    assert made.attributes["chainfleet.stage"] == "research"
    assert replayed.attributes["chainfleet.reused"] is True
    assert replayed.attributes["chainfleet.reused.source"] == "journal"
    (salt,) = under(roots["2"])
    assert "chainfleet.reused" not in salt.attributes
