"""Bring your own chain, the Python door, as its users meet it: an async function of one item
whose calls go through chainfleet (limits, retries, journal, stats) to the sim-server over real
HTTP, run by ``chainfleet.run`` over many items.

Every test starts a sim-server on 127.0.0.1 (its own thread) and reads what it counted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import chainfleet
from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-sim-own-chain-0123456789"
MODEL = "gpt-4o-mini"
TOPICS = ["tea", "coffee", "cocoa"]


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy and no real endpoint or key from the environment can come into play."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sim() -> Any:
    with SimServerThread(SimServerSettings(api_keys=(KEY,))) as server:
        yield server


def results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_an_openai_chain_runs_over_every_item(sim: Any, tmp_path: Path) -> None:
    """Two calls per item through ``fleet.openai()``, labelled by stage: every item's output is
    its last reply, every call reached the server once, and the report counts them by stage."""

    async def article(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        with fleet.stage("research"):
            notes = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Research {topic}."}]
            )
        with fleet.stage("write"):
            draft = await client.chat.completions.create(
                model=MODEL,
                messages=[
                    {"role": "user", "content": f"Write on {topic}: {notes.choices[0].message.content}"}
                ],
            )
        return draft.choices[0].message.content or ""

    out = tmp_path / "out"
    report = chainfleet.run(article, TOPICS, concurrency=3, out=out)
    assert report.items_succeeded == 3
    rows = results(out)
    assert [row["status"] for row in rows] == ["succeeded"] * 3
    assert all(row["outputs"]["article"] for row in rows)
    stats = sim.stats()
    assert stats["ok"] == 6
    assert all(count == 1 for count in stats["completed_by_key"].values())
    data = json.loads((out / "report.json").read_text())
    assert data["calls"]["total"] == 6


async def ask(client: Any, content: str) -> str:
    reply = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}])
    return reply.choices[0].message.content or ""


def chain_of_three(sim: Any, *, fail_first: set[str] | None = None) -> Any:
    """research -> write -> edit with the openai SDK; an item in ``fail_first`` raises once
    after its research call (its first run), so the retry pass runs it again."""
    failed: set[str] = set()

    async def article(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        text = ""
        for stage in ("research", "write", "edit"):
            with fleet.stage(stage):
                reply = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"{stage}: {topic}"}]
                )
            text = reply.choices[0].message.content or ""
            if fail_first and topic in fail_first and topic not in failed:
                failed.add(topic)
                raise RuntimeError(f"flaky after {stage}")
        return text

    return article


def test_the_retry_pass_replays_the_journal(sim: Any, tmp_path: Path) -> None:
    """An item whose code raised after its first call runs again in the retry pass: the call
    it made comes from the journal (replayed, not sent again), the rest go out."""
    article = chain_of_three(sim, fail_first={"tea"})
    out = tmp_path / "out"
    report = chainfleet.run(article, TOPICS, concurrency=3, out=out)
    assert report.items_succeeded == 3
    stats = sim.stats()
    assert stats["ok"] == 9  # 3 items x 3 calls, none twice
    assert all(count == 1 for count in stats["completed_by_key"].values())
    data = json.loads((out / "report.json").read_text())
    assert data["replayed_calls"] == 1
    assert data["calls"]["total"] == 9
    assert "Replayed: 1 calls answered from the run's journal" in (out / "report.md").read_text()


def test_stages_are_the_labels_of_the_calls(sim: Any, tmp_path: Path) -> None:
    """The report's stages are the chain's ``fleet.stage`` labels, in order, three calls each."""
    out = tmp_path / "out"
    chainfleet.run(chain_of_three(sim), TOPICS, concurrency=3, out=out)
    data = json.loads((out / "report.json").read_text())
    assert list(data["stages"]) == ["research", "write", "edit"]
    assert [data["stages"][s]["calls"] for s in data["stages"]] == [3, 3, 3]
    assert "| research | 3 |" in (out / "report.md").read_text()


def test_an_exception_fails_only_its_item_with_its_last_frame(sim: Any, tmp_path: Path) -> None:
    """A chain that raises fails its item as ``code_error``: the message and the last frame in
    results.jsonl, the whole traceback in logs/; the other items succeed."""

    async def article(topic: str, fleet: chainfleet.Fleet) -> str:
        if topic == "coffee":
            raise ValueError("no beans today")
        return topic.upper()

    out = tmp_path / "out"
    report = chainfleet.run(article, TOPICS, concurrency=3, out=out, retry_passes=0)
    assert report.items_succeeded == 2 and report.items_failed == 1
    failed = next(row for row in results(out) if row["status"] == "failed")
    assert failed["error"]["type"] == "code_error"
    assert failed["error"]["message"].startswith("ValueError: no beans today (at ")
    assert "test_own_chain.py:" in failed["error"]["message"] and "in article" in failed["error"]["message"]
    logs = list((out / "logs").glob("*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert text.startswith("Traceback (most recent call last):") and "ValueError: no beans today" in text


def test_a_provider_error_keeps_its_kind(sim: Any, tmp_path: Path) -> None:
    """A 400 the SDK raises as BadRequestError fails the item as ``invalid_request`` (as a YAML
    stage would), not as the user's code error; it is not retried."""

    async def article(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        content = f"Research {topic}." + (" [[sim:400]]" if topic == "cocoa" else "")
        return await ask(client, content)

    out = tmp_path / "out"
    report = chainfleet.run(article, TOPICS, concurrency=3, out=out)
    assert report.items_failed == 1
    failed = next(row for row in results(out) if row["status"] == "failed")
    assert failed["error"]["type"] == "invalid_request"
    assert sim.stats()["status"].get("400") == 1  # asked once: a permanent error is not retried


def test_a_server_error_is_retried_by_chainfleet_not_the_sdk(sim: Any, tmp_path: Path) -> None:
    """A 500 the first time is retried with the run's policy (the SDK's retries are off): the
    item succeeds, the calls table shows the retry."""

    async def article(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        content = f"Research {topic}. [[sim:fail-once-{topic}]]"
        return await ask(client, content)

    out = tmp_path / "out"
    report = chainfleet.run(article, TOPICS, concurrency=3, out=out)
    assert report.items_succeeded == 3
    data = json.loads((out / "report.json").read_text())
    assert data["calls"]["retried"] == 3 and data["calls"]["succeeded"] == 3


def test_a_chain_that_never_calls_a_model(tmp_path: Path) -> None:
    """Plain Python over the items: outputs kept as JSON values, no calls counted."""

    async def count(item: dict, fleet: chainfleet.Fleet) -> dict[str, Any]:
        return {"topic": item["topic"], "letters": len(item["topic"])}

    out = tmp_path / "out"
    report = chainfleet.run(count, [{"topic": t} for t in TOPICS], concurrency=2, out=out)
    assert report.items_succeeded == 3
    assert [row["outputs"]["count"] for row in results(out)] == [
        {"topic": "tea", "letters": 3},
        {"topic": "coffee", "letters": 6},
        {"topic": "cocoa", "letters": 5},
    ]
    assert json.loads((out / "report.json").read_text())["calls"]["total"] == 0


def test_a_step_runs_once_per_item_across_the_retry_pass(tmp_path: Path) -> None:
    """``fleet.step`` journals its JSON result: the item's second run gets it back without
    calling the function again."""
    searched: list[str] = []
    raised: set[str] = set()

    def search(query: str) -> list[str]:
        searched.append(query)
        return [f"{query} result 1", f"{query} result 2"]

    async def research(topic: str, fleet: chainfleet.Fleet) -> list[str]:
        found = await fleet.step("search", search, topic)
        if topic not in raised:
            raised.add(topic)
            raise ConnectionError("the write failed")
        return list(found)

    out = tmp_path / "out"
    report = chainfleet.run(research, TOPICS, concurrency=3, out=out)
    assert report.items_succeeded == 3
    assert sorted(searched) == sorted(TOPICS)
    assert results(out)[0]["outputs"]["research"] == ["tea result 1", "tea result 2"]


class Verdict(BaseModel):
    topic: str
    words: int


def test_an_output_contract_checks_the_return_value(tmp_path: Path) -> None:
    """``output=`` a pydantic model: a matching value is kept, a wrong one fails its item as
    invalid_output."""

    async def judge(topic: str, fleet: chainfleet.Fleet) -> Any:
        if topic == "coffee":
            return {"topic": topic}
        return Verdict(topic=topic, words=len(topic))

    out = tmp_path / "out"
    report = chainfleet.run(judge, TOPICS, concurrency=3, out=out, output=Verdict, retry_passes=0)
    assert report.items_succeeded == 2
    rows = results(out)
    assert rows[0]["outputs"]["judge"] == {"topic": "tea", "words": 3}
    assert rows[1]["status"] == "failed" and rows[1]["error"]["type"] == "invalid_output"


def test_a_path_chainfleet_cannot_read_passes_through_with_a_warning(sim: Any, tmp_path: Path) -> None:
    """A call to an API chainfleet does not know goes through unlimited and uncounted in
    tokens; the report names the path."""

    async def health(topic: str, fleet: chainfleet.Fleet) -> int:
        response = await fleet.http_client().get(f"{sim.url}/health")
        return response.status_code

    out = tmp_path / "out"
    report = chainfleet.run(health, TOPICS, concurrency=3, out=out)
    assert report.items_succeeded == 3
    assert [row["outputs"]["health"] for row in results(out)] == [200, 200, 200]
    data = json.loads((out / "report.json").read_text())
    assert data["unlimited_paths"] == {"/health": 3}
    assert (
        "**Warning**: 3 calls to `/health`, an API chainfleet cannot read" in (out / "report.md").read_text()
    )


def test_a_revoked_key_stops_the_run_as_a_yaml_stage_would(sim: Any, tmp_path: Path) -> None:
    """A 401 is fatal: the item fails as ``auth_failed`` and the run stops admitting items."""

    async def article(topic: str, fleet: chainfleet.Fleet) -> str:
        client = fleet.openai(base_url=f"{sim.url}/v1", api_key="sk-wrong-key-0000000000")
        return await ask(client, f"Research {topic}.")

    out = tmp_path / "out"
    report = chainfleet.run(article, [f"topic {i}" for i in range(20)], concurrency=2, out=out)
    assert report.items_succeeded == 0
    assert report.stopped_kind == "auth_failed"
    kinds = {row["error"]["type"] for row in results(out)}
    assert "auth_failed" in kinds and kinds <= {"auth_failed", "skipped"}
    assert sim.stats()["status"].get("401", 0) < 20  # stopped: not every item asked
    for name in ("report.md", "report.json", "results.jsonl"):
        assert "sk-wrong-key" not in (out / name).read_text()
    assert b"sk-wrong-key" not in (out / "run.db").read_bytes()


def test_code_whose_path_changed_simply_calls_again(sim: Any, tmp_path: Path) -> None:
    """An item's second run asks a different first question (its code took another path): a
    miss is a new call, never the old answer; what is asked the same is replayed."""
    runs: dict[str, int] = {}

    async def article(topic: str, fleet: chainfleet.Fleet) -> str:
        runs[topic] = runs.get(topic, 0) + 1
        client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        notes = await ask(client, f"Research {topic}.")  # the same both times: replayed
        angle = "history" if runs[topic] == 1 else "economics"
        draft = await ask(client, f"Write on the {angle} of {topic}.")
        if runs[topic] == 1:
            raise RuntimeError("try another angle")
        return f"{notes[:10]}|{draft}"

    out = tmp_path / "out"
    report = chainfleet.run(article, ["tea"], out=out)
    assert report.items_succeeded == 1
    stats = sim.stats()
    assert stats["ok"] == 3  # research once, the history draft, the economics draft
    assert all(count == 1 for count in stats["completed_by_key"].values())
    data = json.loads((out / "report.json").read_text())
    assert data["replayed_calls"] == 1


def test_a_reviewers_edit_is_what_fleet_review_returns_after_resume(sim: Any, tmp_path: Path) -> None:
    """Each item drafts (one call), asks ``fleet.review``, and writes from what it gets back
    (a second call). The items park; a person edits one through the review session (what the
    terminal's ``e`` key and the web page's edit button call) and approves another. The resume
    replays each draft from the journal (the sim-server answered it once), ``fleet.review``
    returns the edited text, and the write call and the output are made from it."""
    from chainfleet.review.session import ReviewSession
    from chainfleet.sim.call import completion_key

    seen: dict[str, Any] = {}

    async def reviewed(topic: str, fleet: chainfleet.Fleet) -> dict[str, str]:
        client = fleet.openai(base_url=f"{sim.url}/v1", api_key=KEY)
        with fleet.stage("draft"):
            draft = await ask(client, f"draft: {topic}")
        decision = await fleet.review("draft", f"DRAFT {topic}: {draft[:30]}")
        seen[topic] = decision
        with fleet.stage("write"):
            final = await ask(client, f"write from: {decision.text}")
        return {"reviewed": decision.text, "final": final}

    out = tmp_path / "out"
    first = chainfleet.run(reviewed, TOPICS, concurrency=3, out=out)
    assert first.items_needs_review == 3
    assert [row["status"] for row in results(out)] == ["needs_review"] * 3
    assert sim.stats()["ok"] == 3  # the drafts only
    edited = "A person's own words on coffee."
    with ReviewSession.open(out, reviewer="tester") as session:
        session.edit("2", edited)
        session.approve("1")

    second = chainfleet.run(reviewed, TOPICS, concurrency=3, out=out, resume=True)
    assert (second.items_succeeded, second.items_needs_review) == (2, 1)
    assert seen["coffee"].action == "edit" and seen["coffee"].text == edited
    assert seen["tea"].action == "approve" and seen["tea"].text.startswith("DRAFT tea: ")
    by_id = {row["id"]: row for row in results(out)}
    assert by_id["2"]["outputs"]["reviewed"]["reviewed"] == edited
    assert by_id["2"]["outputs"]["reviewed"]["final"]
    assert by_id["3"]["status"] == "needs_review"
    counts = sim.stats()["completed_by_key"]
    for topic in TOPICS:  # each draft went out once: the resume replayed it from the journal
        assert counts[completion_key(MODEL, "", f"draft: {topic}")] == 1
    assert counts[completion_key(MODEL, "", f"write from: {edited}")] == 1  # written from the edit
    assert sim.stats()["ok"] == 5
    assert json.loads((out / "report.json").read_text())["replayed_calls"] == 3
