"""The Python door on ``--backend ray``: the user's chain, in a file of its own, is shipped to
Ray workers on a local Ray node (2 CPUs, 127.0.0.1 only) and calls the sim-server through
``fleet.openai()``; its calls go through the cluster's limiter actors, its journal is the
driver's run store.

Ray is slow to start on a small machine, so the tests share one node (module scope). Where Ray
is not installed these tests skip, except under CI (the env var ``CI`` set), where a missing
Ray fails them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet.code.target import load_target
from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline
from chainfleet.runner.api import arun
from chainfleet.sim.call import completion_key
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

if importlib.util.find_spec("ray") is None:
    if os.environ.get("CI"):
        pytest.fail("CI: Ray is not installed (pip install -e '.[ray]')", pytrace=False)
    pytest.skip("Ray is not installed (pip install 'chainfleet[ray]')", allow_module_level=True)

pytestmark = pytest.mark.e2e

KEY = "sk-ray-own-chain-0123456789"
MODEL = "gpt-4o-mini"
TOPICS = ["tea", "coffee", "cocoa", "mate", "chai"]

#: the user's chain file; FLAGS is filled with a folder of the test's (a flaky item's marker)
CHAIN = """\
import os

FLAGS = {flags!r}


async def ask(client, prompt):
    reply = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{{"role": "user", "content": prompt}}]
    )
    return reply.choices[0].message.content


async def article(topic, fleet):
    client = fleet.openai()
    text = ""
    for stage in ("research", "write", "edit"):
        with fleet.stage(stage):
            text = await ask(client, f"{{stage}}: {{topic}}")
        marker = os.path.join(FLAGS, topic)
        if stage == "write" and topic == "tea" and not os.path.exists(marker):
            open(marker, "w").close()  # fails once, after two calls: the retry pass replays them
            raise RuntimeError("flaky after write")
    return text


async def reviewed(topic, fleet):
    client = fleet.openai()
    with fleet.stage("draft"):
        draft = await ask(client, f"draft: {{topic}}")
    decision = await fleet.review("draft", f"DRAFT {{topic}}: " + draft[:40])
    with fleet.stage("polish"):
        polished = await ask(client, f"polish: {{decision.text}}")
    return {{"decided": decision.action, "text": decision.text, "polished": polished}}
"""

UNSHIPPABLE = """\
import threading

LOCK = threading.Lock()


async def article(topic, fleet):
    with LOCK:
        return topic
"""


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimServerThread]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0.05)) as server:
        # the driver forwards these to its workers (as it does for YAML stages)
        monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        yield server


def chain(tmp_path: Path, name: str) -> Pipeline:
    """The chain file written into the test's folder and loaded as ``chainfleet run`` loads it."""
    flags = tmp_path / "flags"
    flags.mkdir(exist_ok=True)
    path = tmp_path / "own_chain_ray.py"
    path.write_text(CHAIN.format(flags=str(flags)), encoding="utf-8")
    return Pipeline.from_function(load_target(f"{path}:{name}"))


def rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def report(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return data


def test_a_chain_on_ray_gives_the_outputs_of_a_local_run_and_its_retry_pass_replays(
    ray_node: str, sim: SimServerThread, tmp_path: Path
) -> None:
    """The same chain locally and on two Ray workers: the same outputs. On Ray, the item whose
    code raised after two calls runs again in the retry pass and those two calls come from the
    journal the driver committed (the sim-server answered every distinct request once)."""
    pipeline = chain(tmp_path, "article")
    ray_run = asyncio.run(
        arun(pipeline, TOPICS, out=tmp_path / "ray", concurrency=4, backend="ray", workers=2, rpm=6000)
    )
    assert ray_run.items_succeeded == len(TOPICS), rows(tmp_path / "ray")
    counts = sim.stats()["completed_by_key"]
    assert len(counts) == 3 * len(TOPICS)
    assert all(count == 1 for count in counts.values()), counts  # nothing journaled went out twice
    data = report(tmp_path / "ray")
    assert data["replayed_calls"] == 2
    assert data["calls"]["total"] == 3 * len(TOPICS)
    assert sorted(data["stages"]) == ["edit", "research", "write"]
    # the model the chain called got one limiter actor for the cluster, told --rpm
    assert data["rates"]["models"]["openai:gpt-4o-mini"]["told"]["rpm"] == 6000

    (tmp_path / "flags" / "tea").unlink()  # the local run fails tea once too
    local = asyncio.run(arun(pipeline, TOPICS, out=tmp_path / "local", concurrency=4))
    assert local.items_succeeded == len(TOPICS)
    outputs = [(row["id"], row["status"], row["outputs"]) for row in rows(tmp_path / "ray")]
    assert outputs == [(row["id"], row["status"], row["outputs"]) for row in rows(tmp_path / "local")]
    assert report(tmp_path / "local")["replayed_calls"] == 2


def test_review_on_ray_parks_then_resume_replays_and_returns_the_edit(
    ray_node: str, sim: SimServerThread, tmp_path: Path
) -> None:
    """Every item parks at ``fleet.review`` on Ray (exit 3's state); one is approved, one edited
    through the review session the terminal and the web page use, one waits on. The resume on
    Ray replays each item's draft call from the journal (the sim-server never sees it again)
    and ``fleet.review`` returns the decision: the edited item goes on with the edited text."""
    from chainfleet.review.session import ReviewSession

    pipeline = chain(tmp_path, "reviewed")
    out = tmp_path / "out"
    topics = TOPICS[:3]
    first = asyncio.run(arun(pipeline, topics, out=out, concurrency=3, backend="ray", workers=2))
    assert first.items_needs_review == 3 and first.items_failed == 0
    drafts = {completion_key(MODEL, "", f"draft: {topic}") for topic in topics}
    assert set(sim.stats()["completed_by_key"]) == drafts
    with ReviewSession.open(out, reviewer="tester") as session:
        session.approve("1")
        session.edit("2", "EDITED by a person")

    second = asyncio.run(
        arun(pipeline, topics, out=out, concurrency=3, backend="ray", workers=2, resume=True)
    )
    assert (second.items_succeeded, second.items_needs_review) == (2, 1)
    by_id = {row["id"]: row for row in rows(out)}
    assert by_id["1"]["outputs"]["reviewed"]["decided"] == "approve"
    assert by_id["1"]["outputs"]["reviewed"]["text"].startswith("DRAFT tea: ")
    assert by_id["2"]["outputs"]["reviewed"]["decided"] == "edit"
    assert by_id["2"]["outputs"]["reviewed"]["text"] == "EDITED by a person"
    counts = sim.stats()["completed_by_key"]
    assert all(counts[key] == 1 for key in drafts), counts  # the drafts were replayed
    assert counts[completion_key(MODEL, "", "polish: EDITED by a person")] == 1
    assert by_id["3"]["status"] == "needs_review"
    assert report(out)["replayed_calls"] == 3


def test_a_chain_that_cannot_be_shipped_is_refused_before_any_call(ray_node: str, tmp_path: Path) -> None:
    path = tmp_path / "unshippable.py"
    path.write_text(UNSHIPPABLE, encoding="utf-8")
    pipeline = Pipeline.from_function(load_target(f"{path}:article"))
    with pytest.raises(ConfigError) as raised:
        asyncio.run(arun(pipeline, ["tea"], out=tmp_path / "out", backend="ray", workers=1))
    assert "cannot be shipped to the Ray workers" in str(raised.value)
    assert "lock" in str(raised.value).lower()


def test_a_traced_chain_on_ray_has_its_calls_under_its_item_and_replays_marked(
    ray_node: str, sim: SimServerThread, tmp_path: Path
) -> None:
    """``--otel`` with the Python door on Ray: each SDK call a worker made is a chat span under
    its item's root, labelled with its stage; tea's retry pass replays its first two calls from
    the journal, and those spans say so (the workers' notes, drawn by the driver's tracer)."""
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        if os.environ.get("CI"):
            pytest.fail("CI: the OpenTelemetry SDK is not installed (pip install -e '.[otel]')")
        pytest.skip("the OpenTelemetry SDK is not installed (pip install 'chainfleet[otel]')")
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from chainfleet.runner.core import Runner
    from chainfleet.trace.otel import OtelTracer, TraceOptions

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

    pipeline = chain(tmp_path, "article")
    done = asyncio.run(
        arun(pipeline, TOPICS, out=tmp_path / "ray", concurrency=4, backend="ray", workers=2, on_start=start)
    )
    assert done.items_succeeded == len(TOPICS)
    spans = exporter.get_finished_spans()
    roots = {str((s.attributes or {})["chainfleet.item.id"]): s for s in spans if s.parent is None}
    assert sorted(roots) == [str(i) for i in range(1, len(TOPICS) + 1)]

    def calls(root: Any) -> list[tuple[str, Any, Any]]:
        under = [s for s in spans if s.parent is not None and s.parent.span_id == root.context.span_id]
        under.sort(key=lambda s: s.start_time or 0)
        return [
            (s.name, s.attributes["chainfleet.stage"], s.attributes.get("chainfleet.reused.source"))
            for s in under
        ]

    made = [(f"chat {MODEL}", stage, None) for stage in ("research", "write", "edit")]
    assert calls(roots["2"]) == made
    replayed = [(f"chat {MODEL}", stage, "journal") for stage in ("research", "write")]
    assert calls(roots["1"]) == made[:2] + replayed + made[2:]  # tea: failed once, then replayed
