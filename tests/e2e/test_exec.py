"""``chainfleet exec`` as its users meet it: a Python script with the openai SDK, a shell script
with curl and a Node.js script with the openai npm package, each run once per item, their model
calls through chainfleet's proxy to the sim-server (real HTTP on 127.0.0.1), read back from
results.jsonl, the item logs, the report and the sim-server's own counts."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet.sim.server import SimServerSettings, SimServerThread
from exec_cli import KEY, chainfleet

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "tests" / "e2e" / "node"
TOPICS = ["solar power", "wind", "heat pumps"]

PYTHON_CHAIN = """\
import sys
import openai

topic = sys.argv[1]
client = openai.OpenAI(max_retries=0)
ask = lambda text: client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
).choices[0].message.content
notes = ask(f"Research notes on {topic}.")
print(ask(f"Write on {topic} from: {notes}"), end="")
"""


@pytest.fixture
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0)) as server:
        yield server


@pytest.fixture
def topics(tmp_path: Path) -> Path:
    path = tmp_path / "topics.txt"
    path.write_text("".join(f"{topic}\n" for topic in TOPICS))
    return path


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def report(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return data


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_a_python_chain_with_the_openai_sdk(sim: SimServerThread, tmp_path: Path, topics: Path) -> None:
    chain = script(tmp_path, "chain.py", PYTHON_CHAIN)
    out = tmp_path / "out"

    proc = chainfleet(
        sim,
        "exec",
        "-i",
        str(topics),
        "-c",
        "3",
        "-o",
        str(out),
        "-q",
        "--",
        sys.executable,
        str(chain),
        "{topic}",
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stderr
    assert "3/3 items succeeded" in proc.stdout
    rows = results(out)
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    assert all(row["outputs"]["command"].startswith("<!-- simulated") for row in rows)
    stats = sim.stats()
    assert stats["ok"] == 6  # two calls per item, each made once
    assert all(count == 1 for count in stats["completed_by_key"].values())
    assert report(out)["calls"]["total"] == 6


def test_a_shell_chain_with_curl_labels_its_stages(
    sim: SimServerThread, tmp_path: Path, topics: Path
) -> None:
    """The worked example, examples/own_chain.sh: research -> write -> edit with curl."""
    out = tmp_path / "out"

    proc = chainfleet(
        sim,
        "exec",
        "-i",
        str(topics),
        "-c",
        "2",
        "-o",
        str(out),
        "-q",
        "--",
        str(ROOT / "examples" / "own_chain.sh"),
        "{topic}",
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stderr
    rows = results(out)
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    assert sim.stats()["ok"] == 9
    stages = [row[0] for row in _calls(out)]
    assert sorted(set(stages)) == ["edit", "research", "write"]  # X-Chainfleet-Stage


def _calls(out: Path) -> list[tuple[str, ...]]:
    import sqlite3

    with sqlite3.connect(f"file:{out / 'run.db'}?mode=ro", uri=True) as db:
        return list(db.execute("SELECT stage FROM calls"))


@pytest.mark.skipif(
    not (NODE / "node_modules" / "openai").is_dir() and not os.environ.get("CI"),
    reason="the openai npm package is not installed (cd tests/e2e/node && npm ci)",
)
def test_a_nodejs_chain_with_the_openai_npm_package(
    sim: SimServerThread, tmp_path: Path, topics: Path
) -> None:
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    out = tmp_path / "out"

    proc = chainfleet(
        sim,
        "exec",
        "-i",
        str(topics),
        "-c",
        "3",
        "-o",
        str(out),
        "-q",
        "--",
        "node",
        str(NODE / "chain.mjs"),
        "{topic}",
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stderr
    rows = results(out)
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    assert all(row["outputs"]["command"].startswith("<!-- simulated") for row in rows)
    assert sim.stats()["ok"] == 6


def test_a_failing_command_fails_its_item_with_the_exit_code_and_stderr_tail(
    sim: SimServerThread, tmp_path: Path, topics: Path
) -> None:
    chain = script(
        tmp_path,
        "chain.sh",
        '#!/bin/sh\nif [ "$1" = wind ]; then\n  for i in 1 2 3 4 5 6 7 8; do echo "trace line $i" >&2; done\n'
        '  echo "no wind today" >&2; exit 3\nfi\necho "article on $1"\n',
    )
    out = tmp_path / "out"

    proc = chainfleet(
        sim,
        "exec",
        "-i",
        str(topics),
        "-o",
        str(out),
        "-q",
        "--retry-passes",
        "0",
        "--",
        str(chain),
        "{topic}",
        cwd=tmp_path,
    )

    assert proc.returncode == 1, proc.stderr
    assert "2/3 items succeeded, 1 failed" in proc.stdout
    rows = {row["input"]["topic"]: row for row in results(out)}
    assert rows["solar power"]["outputs"]["command"] == "article on solar power\n"
    error = rows["wind"]["error"]
    assert error["type"] == "command_failed"
    assert error["message"] == (
        "the command exited with code 3; stderr: trace line 5 | trace line 6 | trace line 7 | "
        "trace line 8 | no wind today"
    )
    logs = "\n".join(path.read_text() for path in (out / "logs").iterdir())
    assert "trace line 1" in logs and "no wind today" in logs  # the whole stderr


def test_a_timeout_ends_the_command_and_the_retry_pass_runs_it_again(
    sim: SimServerThread, tmp_path: Path, topics: Path
) -> None:
    chain = script(
        tmp_path, "chain.sh", '#!/bin/sh\necho "$1" >> runs.txt\n[ "$1" = wind ] && sleep 30\necho "on $1"\n'
    )
    out = tmp_path / "out"

    proc = chainfleet(
        sim,
        "exec",
        "-i",
        str(topics),
        "-o",
        str(out),
        "-q",
        "--timeout",
        "1",
        "--",
        str(chain),
        "{topic}",
        cwd=tmp_path,
    )

    assert proc.returncode == 1, proc.stderr
    rows = {row["input"]["topic"]: row for row in results(out)}
    assert rows["wind"]["error"]["type"] == "command_timeout"
    assert "ran past its timeout of 1 s and was ended" in rows["wind"]["error"]["message"]
    assert (tmp_path / "runs.txt").read_text().split("\n").count("wind") == 2  # main pass + retry pass


def test_stdin_and_the_output_file(sim: SimServerThread, tmp_path: Path) -> None:
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text(
        '{"id": "a", "topic": "tea", "tags": ["x"]}\n{"id": "b", "topic": "cocoa", "tags": []}\n'
    )
    chain = script(
        tmp_path,
        "chain.py",
        "import json, sys\nitem = json.load(sys.stdin)\n"
        "text = f\"{item['topic']} with {len(item['tags'])} tags\"\n"
        "open(sys.argv[1], 'w').write(text)\nprint('not the output')\n",
    )
    out = tmp_path / "out"

    proc = chainfleet(
        sim,
        "exec",
        "-i",
        str(rows_file),
        "-o",
        str(out),
        "-q",
        "--stdin",
        "--output-file",
        "made-{id}.txt",
        "--",
        sys.executable,
        str(chain),
        "made-{id}.txt",
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stderr
    outputs = {row["id"]: row["outputs"]["command"] for row in results(out)}
    assert outputs == {"a": "tea with 1 tags", "b": "cocoa with 0 tags"}


def test_a_chain_that_never_calls_a_model(sim: SimServerThread, tmp_path: Path, topics: Path) -> None:
    out = tmp_path / "out"

    proc = chainfleet(
        sim, "exec", "-i", str(topics), "-o", str(out), "-q", "--", "echo", "{id}:", "{topic}", cwd=tmp_path
    )

    assert proc.returncode == 0, proc.stderr
    assert [row["outputs"]["command"] for row in results(out)] == [
        "1: solar power\n",
        "2: wind\n",
        "3: heat pumps\n",
    ]
    assert sim.stats()["calls"] == 0


MIXED_CHAIN = """\
import pathlib, sys
import anthropic, openai

topic = sys.argv[1]
stream = openai.OpenAI(max_retries=0).chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": f"Notes on {topic}"}], stream=True
)
notes = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
reply = anthropic.Anthropic(max_retries=0).messages.create(
    model="claude-3-5-haiku-latest", max_tokens=400, messages=[{"role": "user", "content": notes[:300]}]
)
try:
    openai.OpenAI(max_retries=0).batches.list()
except openai.APIError:
    pass
with open("texts.txt", "a") as texts:
    texts.write(repr((notes, reply.content[0].text)) + "\\n")
first = pathlib.Path(f"failed-once-{topic}")
if not first.exists():
    first.write_text("x")
    sys.exit("the first run of each item fails after its calls")
print(reply.content[0].text, end="")
"""


def test_the_retry_pass_replays_streams_and_anthropic_calls_from_the_journal(
    sim: SimServerThread, tmp_path: Path
) -> None:
    """Each item fails once after its calls; the retry pass runs it again and every call is
    answered from the journal (the stream as the same events); an unknown path goes through
    with a warning in the report."""
    topics = tmp_path / "topics.txt"
    topics.write_text("tea\ncocoa\n")
    chain = script(tmp_path, "chain.py", MIXED_CHAIN)
    out = tmp_path / "out"
    anthropic_env = {"ANTHROPIC_BASE_URL": sim.url, "ANTHROPIC_API_KEY": KEY}

    proc = chainfleet(
        sim,
        "exec",
        "-i",
        str(topics),
        "-o",
        str(out),
        "-q",
        "--",
        sys.executable,
        str(chain),
        "{topic}",
        cwd=tmp_path,
        **anthropic_env,
    )

    assert proc.returncode == 0, proc.stderr
    assert [row["status"] for row in results(out)] == ["succeeded"] * 2
    assert sim.stats()["ok"] == 4  # one stream and one message per item, each made once
    texts = (tmp_path / "texts.txt").read_text().splitlines()
    assert len(texts) == 4 and sorted(texts)[0::2] == sorted(texts)[1::2]  # replays read alike
    data = report(out)
    assert data["replayed_calls"] == 6  # the pass-through calls are journaled too
    assert data["unlimited_paths"] == {"/v1/batches": 2}  # really made once per item
    assert "`/v1/batches`, an API chainfleet cannot read" in (out / "report.md").read_text()


def test_an_error_on_a_path_chainfleet_cannot_read_goes_back_to_the_command_only(
    sim: SimServerThread, tmp_path: Path, topics: Path
) -> None:
    """GET /v1/models is a 404 on the sim-server: the command sees it and goes on; the run does
    not take it for a model that is gone."""
    chain = script(
        tmp_path,
        "chain.py",
        "import openai\ntry:\n    openai.OpenAI(max_retries=0).models.list()\n"
        "except openai.NotFoundError:\n    print('no model list here', end='')\n",
    )
    out = tmp_path / "out"

    proc = chainfleet(
        sim, "exec", "-i", str(topics), "-o", str(out), "-q", "--", sys.executable, str(chain), cwd=tmp_path
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [row["outputs"]["command"] for row in results(out)] == ["no model list here"] * 3
    assert report(out)["unlimited_paths"] == {"/v1/models": 3}
