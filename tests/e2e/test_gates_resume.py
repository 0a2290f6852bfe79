"""kill -9 in the middle of revision loops, then resume: no finished revision or judge verdict
is asked for again. A real ``chainfleet run`` subprocess against the sim-server, which counts
every completion by its request."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet import Pipeline
from chainfleet.chain.stage import revision_note
from chainfleet.pipeline.gates import JudgeCheck
from chainfleet.sim.call import completion_key
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from waiting import wait_until

KEY = "sk-gates-resume-0123456789"
CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
ITEMS, CONCURRENCY = 16, 4
PIPELINE = """\
name: gated
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}: the key facts."
    max_tokens: 300
    output:
      type: object
      properties:
        facts: {type: array, items: {type: string}, minItems: 3, maxItems: 5}
      required: [facts]
  - name: write
    prompt: "Write an article on {{ topic }} from:\\n{{ research.facts | join('\\n') }}"
    max_tokens: 600
    gate:
      - min_words: 30
      - name: editor
        judge: {rubric: "clear and accurate", threshold: 9.3}
    on_fail: revise
    max_revisions: 3
    then: accept
"""


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServerThread]:
    server = SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0.04))
    server.start()
    yield server
    server.stop()


def chainfleet(sim: SimServerThread, *args: str, wait: bool = True) -> Any:
    command = [CHAINFLEET, *args, "-q"]
    env = {"PATH": os.environ.get("PATH", ""), "OPENAI_BASE_URL": f"{sim.url}/v1", "OPENAI_API_KEY": KEY}
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)


def finished_revisions(db: Path) -> set[tuple[int, str, int]]:
    """(item, stage, revision) of every revision judged and stored, read as another process."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            rows = conn.execute(
                "SELECT idx, stage, revision FROM revisions WHERE gates IS NOT NULL AND revision > 0"
            )
            return {(int(i), str(s), int(r)) for i, s, r in rows}
    except sqlite3.Error:  # not created yet, or busy for a moment
        return set()


def revision_requests(db: Path, pipeline: Pipeline) -> list[tuple[str, str]]:
    """(draft key, verdict key): the sim-server's keys of the two requests each finished
    revision stored in ``db`` made: the revised draft (the prompt, the gate's feedback and the
    previous draft appended) and the judge's verdict on it, rebuilt from the stored tries."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT idx, item_id, stage, revision, output, feedback, gates FROM revisions"
            " ORDER BY idx, revision"
        ).fetchall()
    research = {idx: json.loads(out) for idx, _, stage, _, out, _, _ in rows if stage == "research"}
    drafts = {(idx, rev): out for idx, _, stage, rev, out, _, _ in rows if stage == "write"}
    write = pipeline.stages[1]
    judge = next(c for c in write.checks if isinstance(c, JudgeCheck))
    requests = []
    for idx, item_id, stage, rev, output, feedback, gates in rows:
        if stage != "write" or rev == 0 or gates is None:
            continue
        topic = f"topic number {item_id}"
        context = {"id": item_id, "topic": topic, "research": research[idx], "feedback": feedback}
        _, prompt = write.render({**context, "previous": drafts[(idx, rev - 1)]})
        prompt += revision_note(feedback, drafts[(idx, rev - 1)])
        verdict = judge.prompt(output, context)
        requests.append((completion_key("gpt-sim", "", prompt), completion_key("gpt-sim", "", verdict)))
    return requests


def essentials(out: Path) -> list[tuple[Any, ...]]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    return [(r["id"], r["status"], r["outputs"], r["gates"]["write"]) for r in records]


def test_kill_9_inside_revision_loops_then_resume_calls_no_finished_revision_again(
    sim: SimServerThread, tmp_path: Path
) -> None:
    pipeline, topics = tmp_path / "gated.yaml", tmp_path / "topics.txt"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    topics.write_text("".join(f"topic number {i}\n" for i in range(1, ITEMS + 1)), encoding="utf-8")
    run = ["run", str(pipeline), "-i", str(topics), "-c", str(CONCURRENCY)]

    sim.reset()
    whole = chainfleet(sim, *run, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    calls_whole = sim.stats()["ok"]
    assert set(sim.stats()["completed_by_key"].values()) == {1}  # every request distinct
    uninterrupted = essentials(tmp_path / "whole")
    assert sum(w["revisions"] for *_, w in uninterrupted) >= 8  # plenty of revision loops

    sim.reset()
    out = tmp_path / "killed"
    proc = chainfleet(sim, *run, "--out", str(out), wait=False)
    wait_until(
        lambda: len(finished_revisions(out / "run.db")) >= 4,
        "the run never got into its revisions",
        poll=0.005,
        alive=proc,
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    stored = revision_requests(out / "run.db", Pipeline.from_yaml(pipeline))
    before = dict(sim.stats()["completed_by_key"])
    calls_before = sim.stats()["ok"]
    # the rebuilt requests are the ones the killed run made
    assert all(before.get(draft) == 1 and before.get(verdict) == 1 for draft, verdict in stored)
    assert calls_before < calls_whole  # killed part-way

    done = chainfleet(sim, "resume", str(out))

    assert done.returncode == 0, done.stderr
    assert essentials(out) == uninterrupted  # the same drafts, verdicts and revisions
    counts = sim.stats()["completed_by_key"]
    # every revision finished before the kill, its draft and its verdict, came from the store
    assert len(stored) >= 4
    assert [(counts[d], counts[v]) for d, v in stored] == [(1, 1)] * len(stored)
    # only calls in flight at the kill (at most one per chain) may have been made again
    twice = [key for key, n in counts.items() if n > 1]
    assert len(twice) <= CONCURRENCY, twice
    assert sim.stats()["ok"] <= calls_whole + CONCURRENCY
