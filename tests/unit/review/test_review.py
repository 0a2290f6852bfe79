"""Human review: the queue a run leaves, the script flags, decisions in run.db, resume after it."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import chainfleet.cli.demo
import chainfleet.cli.report
import chainfleet.cli.resume
import chainfleet.cli.review
import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet import Pipeline, run
from chainfleet.cli import cli
from chainfleet.review import AlreadyDecided
from chainfleet.review.session import EditRefused, ReviewSession
from conftest import TOPICS, pipeline_data, read_report, read_results


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def reviewed(review: Any, stage: int = 1, **overrides: Any) -> dict[str, Any]:
    """The fast content pipeline with ``review:`` on one stage (default: write)."""
    data = pipeline_data(**overrides)
    data["stages"][stage]["review"] = review
    return data


@pytest.fixture
def queued(write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path) -> Path:
    """An output folder whose run left every item waiting at `write` (review: always)."""
    data = reviewed("always")
    pipeline = write_pipeline(stages=data["stages"])
    out = tmp_path / "out"
    result = invoke("run", pipeline, "-i", topics_file(), "-o", out, "-q")
    assert result.exit_code == 3, result.output
    return out


def states(out: Path) -> dict[str, str]:
    with sqlite3.connect(out / "run.db") as db:
        return dict(db.execute("SELECT item_id, state FROM review_queue WHERE state != 'superseded'"))


def test_a_run_parks_items_at_the_reviewed_stage_and_says_how_to_review(queued: Path) -> None:
    rows = read_results(queued)
    assert [r["status"] for r in rows] == ["needs_review"] * len(TOPICS)
    assert all(list(r["outputs"]) == ["research", "write"] for r in rows)  # stopped before edit
    report = read_report(queued)
    assert report["items"]["failed"] == 0 and report["items"]["needs_review"] == len(TOPICS)
    assert report["review"]["waiting"] == len(TOPICS)
    assert "wait for a person" in (queued / "report.md").read_text(encoding="utf-8")


def test_the_closing_line_names_the_count_and_the_command(
    write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    pipeline = write_pipeline(stages=reviewed({"sample": 0.5})["stages"])
    out = tmp_path / "o"
    result = invoke("run", pipeline, "-i", topics_file(), "-o", out, "-q")
    waiting = sum(r["status"] == "needs_review" for r in read_results(out))
    assert 0 < waiting < len(TOPICS)
    assert result.exit_code == 3
    assert f"{waiting} item{'s wait' if waiting > 1 else ' waits'} for review: chainfleet review {out}" in (
        result.output
    )


def test_the_sample_queues_the_same_items_at_any_concurrency() -> None:
    pipeline = Pipeline.from_dict(reviewed({"sample": 0.3}))
    topics = [f"topic {n}" for n in range(40)]
    queues = []
    for concurrency in (1, 25):
        report = run(pipeline, topics, concurrency=concurrency)
        queues.append([r.id for r in report.results() if r.status == "needs_review"])
    assert queues[0] == queues[1]
    assert 4 <= len(queues[0]) <= 20  # about 30% of 40


def test_list_shows_the_queue(queued: Path) -> None:
    result = invoke("review", queued, "--list")
    assert result.exit_code == 0
    assert f"{len(TOPICS)} waiting for review" in result.output
    assert "write" in result.output and "quality" in result.output


def test_approving_an_unknown_id_or_one_not_waiting_is_exit_2_and_changes_nothing(queued: Path) -> None:
    before = states(queued)
    result = invoke("review", queued, "--approve", "1", "nope")
    assert result.exit_code == 2
    assert "nope: no such item in the review queue" in result.output
    assert states(queued) == before  # not even item 1
    assert invoke("review", queued, "--approve", "1", "--reviewer", "ana").exit_code == 0
    again = invoke("review", queued, "--approve", "1", "--reviewer", "bo")
    assert again.exit_code == 2
    assert "already decided by ana at" in again.output


def test_review_on_a_folder_without_a_run_is_exit_2(tmp_path: Path) -> None:
    result = invoke("review", tmp_path, "--list")
    assert result.exit_code == 2
    assert "no run here" in result.output


def test_approve_then_resume_finishes_the_chains(queued: Path) -> None:
    assert invoke("review", queued, "--approve", "1", "2").exit_code == 0
    result = invoke("resume", queued, "-q")
    assert result.exit_code == 3  # three still wait
    rows = {r["id"]: r for r in read_results(queued)}
    assert rows["1"]["status"] == rows["2"]["status"] == "succeeded"
    assert list(rows["1"]["outputs"]) == ["research", "write", "edit"]
    assert rows["3"]["status"] == "needs_review"
    assert rows["1"]["review"]["state"] == "approved" and rows["3"]["review"]["state"] == "waiting"
    report = read_report(queued)
    first, resumed = report["sessions"]  # one run, two sessions: the report sums them
    assert resumed["calls"] == 2  # only the two edits: nothing else was called again
    assert report["calls"]["total"] == first["calls"] + 2
    assert report["review"]["approved"] == 2


def test_reject_reruns_from_the_chosen_stage_with_the_note(queued: Path) -> None:
    first = {r["id"]: r for r in read_results(queued)}
    result = invoke("review", queued, "--reject", "2", "--note", "Cite a source.", "--from", "research")
    assert result.exit_code == 0, result.output
    assert "re-runs from research" in result.output
    invoke("resume", queued, "-q")
    after = {r["id"]: r for r in read_results(queued)}
    assert after["2"]["status"] == "needs_review"  # review: always looks at the new write again
    assert after["2"]["outputs"]["research"] != first["2"]["outputs"]["research"]
    assert after["2"]["outputs"]["write"] != first["2"]["outputs"]["write"]
    assert after["3"]["outputs"] == first["3"]["outputs"]  # the others untouched
    sessions = read_report(queued)["sessions"]
    assert sessions[-1]["calls"] == 2  # research and write of item 2, once each
    with sqlite3.connect(queued / "run.db") as db:
        prompts = db.execute("SELECT COUNT(*) FROM review_queue WHERE item_id = '2'").fetchone()[0]
    assert prompts == 2  # the rejected output and the new one


def test_reject_needs_a_note_and_a_stage_at_or_before_the_reviewed_one(queued: Path) -> None:
    assert invoke("review", queued, "--reject", "1").exit_code == 2
    late = invoke("review", queued, "--reject", "1", "--note", "x", "--from", "edit")
    assert late.exit_code == 2
    assert "not the reviewed stage or one before it: research, write" in late.output
    assert set(states(queued).values()) == {"waiting"}


def test_approve_all_where_quality_uses_a_safe_expression(queued: Path) -> None:
    with ReviewSession.open(queued) as session:
        qualities = sorted(e.quality or 0 for e in session.waiting())
    cut = qualities[len(qualities) // 2]
    result = invoke("review", queued, "--approve-all", "--where", f"quality >= {cut}")
    assert result.exit_code == 0
    approved = sum(q >= cut for q in qualities)
    assert f"approved {approved} matching" in result.output
    assert list(states(queued).values()).count("approved") == approved
    for bad in ("quality >=", "().__class__.__mro__[1].__subclasses__()"):
        refused = invoke("review", queued, "--approve-all", "--where", bad)
        assert refused.exit_code == 2, bad
        assert "--where" in refused.output


def test_an_edit_is_checked_by_the_stage_gate_and_a_refused_one_stores_nothing(tmp_path: Path) -> None:
    data = reviewed("always")
    pipeline = Pipeline.from_dict(data)
    out = tmp_path / "o"
    report = run(pipeline, TOPICS[:2], out=out)
    assert report.exit_code == 3
    gated = data["stages"][1] | {"gate": "review_gates:no_lorem"}
    data["stages"][1] = gated
    (tmp_path / "p.yaml").write_text(json.dumps(data), encoding="utf-8")
    with sqlite3.connect(out / "run.db") as db:  # point the run at a pipeline file with a gate
        db.execute("UPDATE runs SET settings = ?", (json.dumps({"pipeline_file": str(tmp_path / "p.yaml")}),))
    with ReviewSession.open(out, reviewer="ana") as session:
        with pytest.raises(EditRefused, match="says lorem"):
            session.edit("1", "lorem ipsum")
        assert [e.item_id for e in session.waiting()] == ["1", "2"]
        session.edit("1", "A fine article.")
        session.approve("2")
        session.undo()
        assert [e.item_id for e in session.waiting()] == ["2"]
    exported = tmp_path / "decisions.jsonl"
    assert invoke("review", out, "--export", exported).exit_code == 0
    lines = [json.loads(line) for line in exported.read_text(encoding="utf-8").splitlines()]
    assert [(d["id"], d["action"], d["reviewer"], bool(d["undone"])) for d in lines] == [
        ("1", "edit", "ana", False),
        ("2", "approve", "ana", True),
    ]
    assert lines[0]["output_after"] == "A fine article." and lines[0]["output_before"].startswith("<!--")


def test_an_edited_output_is_what_the_next_stage_and_results_get(queued: Path) -> None:
    with ReviewSession.open(queued, reviewer="ana") as session:
        session.edit("1", "My own draft about heat pumps.")
    invoke("resume", queued, "-q")
    row = next(r for r in read_results(queued) if r["id"] == "1")
    assert row["status"] == "succeeded"
    assert row["outputs"]["write"] == "My own draft about heat pumps."
    assert read_report(queued)["review"]["edited"] == 1


def test_two_reviewers_deciding_one_item_at_once_one_wins(queued: Path) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def decide(name: str) -> None:
        with ReviewSession.open(queued, reviewer=name) as session:
            barrier.wait()
            try:
                session.approve("3")
                outcomes.append("won")
            except AlreadyDecided as exc:
                outcomes.append(str(exc))

    threads = [threading.Thread(target=decide, args=(name,)) for name in ("ana", "bo")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("won") == 1
    lost = next(o for o in outcomes if o != "won")
    assert "already decided by" in lost
    with sqlite3.connect(queued / "run.db") as db:
        assert db.execute("SELECT COUNT(*) FROM review_decisions WHERE item_id = '3'").fetchone()[0] == 1


def test_on_gate_fail_parks_what_the_gate_refuses_instead_of_failing_it(tmp_path: Path) -> None:
    from review_gates import cites_a_source

    data = pipeline_data()
    data["stages"][2] |= {"gate": cites_a_source}
    failing = run(Pipeline.from_dict(data), TOPICS[:3])
    assert failing.items_failed == 3
    data["stages"][2] |= {"review": "on_gate_fail"}
    out = tmp_path / "o"
    report = run(Pipeline.from_dict(data), TOPICS[:3], out=out)
    assert report.items_failed == 0 and report.items_needs_review == 3
    with ReviewSession.open(out) as session:
        entry = session.waiting()[0]
    assert entry.reason.startswith("gate failed") and entry.checks["gate"].startswith("failed")


def test_time_waiting_for_a_person_is_reported_apart_from_wall_time(queued: Path) -> None:
    with sqlite3.connect(queued / "run.db") as db:  # as if queued an hour ago
        db.execute("UPDATE review_queue SET queued = queued - 3600")
    invoke("review", queued, "--approve-all")
    invoke("resume", queued, "-q")
    report = read_report(queued)
    assert report["review"]["human_wait_seconds"] >= 5 * 3600
    assert report["items"]["succeeded"] == len(TOPICS)
    # the wall time is the sessions' active time: the hour waiting for a person is not in it
    # (it was asserted under 600 s, a wall-clock bound)
    active = sum(s["active_seconds"] for s in report["sessions"])
    assert report["wall_seconds"] == pytest.approx(active, abs=1e-3)
    runs = invoke("runs", queued)
    assert "0w 5a 0e 0r" in runs.output


def test_a_bad_review_setting_names_the_stage_and_field(write_pipeline: Callable[..., Path]) -> None:
    pipeline = write_pipeline(stages=reviewed({"sample": 2})["stages"])
    result = invoke("run", pipeline, "-i", "x.txt")
    assert result.exit_code == 2
    assert "stage 'write' (stages[1]), field 'review'" in result.output
    assert "0 < F <= 1" in result.output


def test_compare_reports_the_review_queue_identical_at_c1_and_c25(tmp_path: Path) -> None:
    import asyncio

    from chainfleet.runner.compare import run_compare

    pipeline = Pipeline.from_dict(reviewed({"sample": 0.25}))
    topics = [f"topic {n}" for n in range(30)]
    report = asyncio.run(run_compare(pipeline, topics, concurrency=25, out=tmp_path / "c"))
    data = json.loads((tmp_path / "c" / "report.json").read_text(encoding="utf-8"))
    assert data["review_queue_identical"] is True
    assert data["review_queued"] == report.parallel.items_needs_review > 0
    assert report.exit_code == 3


def test_the_demo_leaves_a_small_queue_a_newcomer_can_review_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = invoke("demo", "--review", "--latency", "0", "-q", "-o", out)
    assert result.exit_code == 0, result.output
    assert "Review queue identical between the two modes: yes; 3 items wait for a person" in result.output
    assert f"chainfleet review {out}/parallel" in result.output
    assert invoke("review", out / "parallel", "--approve-all").output.startswith("approved 3")
    resumed = invoke("resume", out / "parallel", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert [r["status"] for r in read_results(out / "parallel")] == ["succeeded"] * 3


FACTS = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
    "required": ["facts"],
}


def test_an_edited_structured_output_is_checked_against_its_contract(
    write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    data = pipeline_data()
    data["stages"][0] |= {"output": FACTS, "review": "always"}
    data["stages"][1]["prompt"] = "Write on {{ topic }} from: {{ research.facts | join('; ') }}"
    out = tmp_path / "o"
    assert (
        invoke(
            "run", write_pipeline(stages=data["stages"]), "-i", topics_file(TOPICS[:2]), "-o", out
        ).exit_code
        == 3
    )
    with ReviewSession.open(out, reviewer="ana") as session:
        entry = session.waiting()[0]
        assert json.loads(entry.output)["facts"]  # the queue holds the structured output as JSON
        for broken in ("not json", '{"facts": []}'):
            with pytest.raises(EditRefused, match="does not match the stage's output schema"):
                session.edit("1", broken)
        assert states(out)["1"] == "waiting"  # nothing stored
        session.edit("1", '{"facts": ["Heat pumps move heat rather than make it"]}')
    assert invoke("resume", out, "-q").exit_code == 3  # item 2 still waits
    row = next(r for r in read_results(out) if r["id"] == "1")
    assert row["status"] == "succeeded"
    assert "Heat pumps move heat" in json.dumps(row["outputs"]["research"])


def test_on_gate_fail_parks_an_item_whose_gate_checks_fail_and_approval_goes_on(
    write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    data = pipeline_data()
    data["stages"][1] |= {"gate": [{"must_include": ["Source:"]}], "review": "on_gate_fail"}
    out = tmp_path / "o"
    result = invoke(
        "run", write_pipeline(stages=data["stages"]), "-i", topics_file(TOPICS[:2]), "-o", out, "-q"
    )
    assert result.exit_code == 3
    with ReviewSession.open(out) as session:
        entry = session.waiting()[0]
    assert "does not mention 'source:'" in entry.reason.lower()
    assert entry.checks["must_include"].startswith("failed: does not mention")
    assert invoke("review", out, "--approve", "1", "2").exit_code == 0
    assert invoke("resume", out, "-q").exit_code == 0
    assert [r["status"] for r in read_results(out)] == ["succeeded", "succeeded"]


def test_a_run_without_a_saved_summary_still_checks_the_stage_of_a_rejection(queued: Path) -> None:
    with sqlite3.connect(queued / "run.db") as db:  # as while a run is still going
        db.execute("UPDATE runs SET summary = NULL")
    result = invoke("review", queued, "--reject", "1", "--note", "x", "--from", "nope")
    assert result.exit_code == 2
    assert "not the reviewed stage or one before it: research, write" in result.output
