"""Traces in a real receiver: ``chainfleet run --otel`` and ``chainfleet exec --otel`` send their
spans over OTLP/HTTP to Arize Phoenix (``phoenix serve`` on 127.0.0.1, its ports free ones), and
the test reads them back through Phoenix's REST API (``/v1/projects/{name}/spans``): the tree
(item > stage > chat, and a code chain's calls under its item) and the GenAI attributes.

Phoenix is found as ``$PHOENIX_BIN``, else in the venv ``.ci/run`` makes for it
(``~/.cache/chainfleet-ci/phoenix``: arize-phoenix pins ``anthropic<2``, chainfleet needs
``>=2``, so it cannot share chainfleet's environment), else on ``PATH``. Without it the tests
skip, except with ``CI`` set, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chainfleet.sim.server import SimServerSettings, SimServerThread
from exec_cli import COMMAND, KEY, SRC, chainfleet

CI_PHOENIX = Path.home() / ".cache" / "chainfleet-ci" / "phoenix" / "bin" / "phoenix"
TOPICS = ["solar power", "wind", "heat pumps"]


def phoenix_bin() -> str | None:
    for candidate in (os.environ.get("PHOENIX_BIN"), str(CI_PHOENIX), shutil.which("phoenix")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Phoenix:
    """A ``phoenix serve`` of this test module's own: its URL and what it holds."""

    def __init__(self, url: str) -> None:
        self.url = url

    def spans(self, project: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = "limit=1000" + (f"&cursor={cursor}" if cursor else "")
            try:
                page = get(f"{self.url}/v1/projects/{project}/spans?{query}")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:  # no span of the project yet
                    return []
                raise
            found += page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def wait_for(self, project: str, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
        """The project's spans once ``count`` of them arrived (Phoenix ingests in batches)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans(project)
            if len(spans) >= count or time.monotonic() > deadline:
                return spans
            time.sleep(0.5)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    binary = phoenix_bin()
    if binary is None:
        message = "Arize Phoenix is not installed (.ci/run installs it into ~/.cache/chainfleet-ci/phoenix)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),  # off the default 4317: parallel tests never clash
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_LOG_MIGRATIONS": "false",
    }
    log = (work / "phoenix.log").open("w")
    proc = subprocess.Popen(
        [binary, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # migrations and start-up: about 30-60 s under load
        while True:
            try:
                get(f"{url}/v1/projects")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"phoenix serve did not start:\n{(work / 'phoenix.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield Phoenix(url)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def tree(spans: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """Spans by their parent's span id (None: the roots), each list in start order."""
    found: dict[str | None, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["start_time"]):
        found.setdefault(span["parent_id"], []).append(span)
    return found


def test_a_runs_traces_in_phoenix_are_item_stage_chat_trees(phoenix: Phoenix, tmp_path: Path) -> None:
    pipeline = tmp_path / "traced.yaml"
    pipeline.write_text(
        yaml.safe_dump(
            {
                "name": "otel-e2e-run",
                "model": "sim",
                "sim": {"latency": 0.05, "seed": 3},
                "input": "topic",
                "stages": [
                    {"name": "research", "prompt": "Research {{ topic }}.", "max_tokens": 300},
                    {
                        "name": "write",
                        "prompt": "Write on {{ topic }} from:\n{{ research }}",
                        "max_tokens": 500,
                    },
                ],
            }
        )
    )
    topics = tmp_path / "topics.txt"
    topics.write_text("".join(f"{t}\n" for t in TOPICS))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [*COMMAND, "run", str(pipeline), "-i", str(topics), "-o", str(out), "-q",
         "--otel", "--otel-endpoint", phoenix.url],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert "spans" not in proc.stderr and "not reachable" not in proc.stderr  # (Phoenix takes no metrics)
    run_id = json.loads((out / "report.json").read_text())["run_id"]
    spans = phoenix.wait_for("otel-e2e-run", 3 * (1 + 2 + 2))
    assert len(spans) == 15
    by_parent = tree(spans)
    roots = by_parent[None]
    assert sorted(r["name"] for r in roots) == ["item 1", "item 2", "item 3"]
    assert len({r["context"]["trace_id"] for r in roots}) == 3
    for root in roots:
        assert root["attributes"]["chainfleet.item.status"] == "succeeded"
        assert root["attributes"]["session.id"] == run_id
        stages = by_parent[root["context"]["span_id"]]
        assert [s["name"] for s in stages] == ["stage research", "stage write"]
        for stage, max_tokens in zip(stages, [300, 500], strict=True):
            (chat,) = by_parent[stage["context"]["span_id"]]
            attrs = chat["attributes"]
            assert chat["name"] == "chat sim" and chat["span_kind"] == "LLM"
            assert attrs["gen_ai.operation.name"] == "chat"
            assert attrs["gen_ai.provider.name"] == "sim"
            assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "sim"
            assert attrs["gen_ai.request.max_tokens"] == max_tokens
            assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
            assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
            assert "gen_ai.input.messages" not in attrs  # text only with --otel-content
            assert stage["start_time"] <= chat["start_time"] <= chat["end_time"] <= stage["end_time"]
    tokens = json.loads((out / "report.json").read_text())["tokens"]
    chats = [s for s in spans if s["name"] == "chat sim"]
    assert sum(c["attributes"]["gen_ai.usage.output_tokens"] for c in chats) == tokens["output"]


CHILD = """\
import json, os, sys, urllib.request

def ask(text):
    request = urllib.request.Request(
        os.environ["OPENAI_BASE_URL"] + "/chat/completions",
        data=json.dumps({"model": "gpt-4o-mini", "max_tokens": 200,
                         "messages": [{"role": "user", "content": text}]}).encode(),
        headers={"content-type": "application/json",
                 "authorization": "Bearer " + os.environ["OPENAI_API_KEY"]},
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]

notes = ask("Research notes on " + sys.argv[1])
print(ask("Write on " + sys.argv[1] + " from: " + notes), end="")
"""


def test_an_exec_chains_calls_nest_under_their_items_trace(phoenix: Phoenix, tmp_path: Path) -> None:
    child = tmp_path / "chain.py"
    child.write_text(CHILD)
    topics = tmp_path / "topics.txt"
    topics.write_text("".join(f"{t}\n" for t in TOPICS))
    out = tmp_path / "out"
    with SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0)) as sim:
        proc = chainfleet(
            sim, "exec", "-i", str(topics), "-c", "3", "-o", str(out),
            "--otel", "--otel-endpoint", phoenix.url, "--", sys.executable, str(child), "{topic}",
            cwd=tmp_path, OTEL_RESOURCE_ATTRIBUTES="openinference.project.name=otel-e2e-exec",
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    spans = phoenix.wait_for("otel-e2e-exec", 3 * (1 + 2))
    by_parent = tree(spans)
    roots = by_parent[None]
    assert len(roots) == 3
    chat_ids = set()
    for root in roots:
        assert root["attributes"]["chainfleet.item.status"] == "succeeded"
        chats = by_parent[root["context"]["span_id"]]
        assert [c["name"] for c in chats] == ["chat gpt-4o-mini", "chat gpt-4o-mini"]
        for chat in chats:
            chat_ids.add(chat["context"]["span_id"])
            attrs = chat["attributes"]
            assert attrs["gen_ai.provider.name"] == "openai"
            assert attrs["gen_ai.usage.output_tokens"] > 0
            assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    # the rest: the limiter's waits (an OpenAI model is always metered: slow start), under a chat
    rest = [s for s in spans if s["parent_id"] is not None and s["context"]["span_id"] not in chat_ids]
    assert all(s["name"] == "wait limiter" and s["parent_id"] in chat_ids for s in rest), rest


CHROMIUM = "/usr/bin/chromium"
#: headless Chromium as root (a container, CI) needs --no-sandbox
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
#: where the README's screenshot goes when this is set (``CHAINFLEET_SCREENSHOT=docs/otel-phoenix.png``)
SCREENSHOT = os.environ.get("CHAINFLEET_SCREENSHOT")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_phoenixs_own_page_shows_an_agent_runs_trace_tree(phoenix: Phoenix, tmp_path: Path) -> None:
    """The README's example agent (research with a tool, a gated write, an edit), traced with
    its text, opened in Phoenix's UI in headless Chromium: the item's tree is on the page, and
    a write call shows the prompt it was sent."""
    from importlib.util import find_spec

    if find_spec("playwright") is None or not Path(CHROMIUM).exists():
        why = "playwright and /usr/bin/chromium are needed (the browser extra; apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    topics = tmp_path / "topics.txt"
    topics.write_text("The rise of heat pumps in cold climates\nWhy sleep matters for memory\n")
    proc = subprocess.run(
        [*COMMAND, "run", str(EXAMPLES / "research_agent.yaml"), "-i", str(topics),
         "-o", str(tmp_path / "out"), "-q", "--otel", "--otel-content", "--otel-endpoint", phoenix.url],
        env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    spans = phoenix.wait_for("research_agent", 2 * 8)
    root = next(s for s in spans if s["parent_id"] is None and s["name"] == "item 1")
    project = next(
        p["id"] for p in get(f"{phoenix.url}/v1/projects")["data"] if p["name"] == "research_agent"
    )
    url = f"{phoenix.url}/projects/{project}/traces/{root['context']['trace_id']}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 960})
            page.goto(url, wait_until="networkidle", timeout=120_000)
            page.wait_for_selector("text=stage research", timeout=120_000)
            for name in ("item 1", "stage research", "execute_tool search", "stage write", "stage edit"):
                assert page.get_by_text(name, exact=True).first.is_visible(), name
            writes = [s for s in spans if s["attributes"].get("chainfleet.stage") == "write"]
            page.get_by_text("chat sim", exact=True).nth(2).click()  # the write stage's first call
            page.wait_for_selector("text=You are a clear, engaging writer.", timeout=60_000)
            assert writes and page.get_by_text("Write an article on", exact=False).first.is_visible()
            page.wait_for_timeout(1000)
            if SCREENSHOT:
                page.screenshot(path=SCREENSHOT)
        finally:
            browser.close()
