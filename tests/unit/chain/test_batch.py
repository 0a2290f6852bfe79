"""Batch mode offline on the sim model: the same outputs as online, one stage in batch mode and
the others online, and chunks cut at the cap, read back from the run's batch ledger. (The real
SDKs against the sim-server's batch APIs are in tests/e2e/test_batch.py.)"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from chainfleet.pipeline.spec import Pipeline
from chainfleet.runner.api import run
from conftest import FAST_BATCH, FAST_PIPELINE, read_report, read_results
from conftest import numbered_topics as topics


def pipeline(model: str = "sim", **changes: Any) -> Pipeline:
    data = json.loads(json.dumps(FAST_PIPELINE))
    data.update({"model": model, "batch": FAST_BATCH, **changes})
    return Pipeline.from_dict(data)


def outputs(out: Path) -> list[dict[str, str]]:
    return [r["outputs"] for r in read_results(out)]


def ledger(out: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(out / "run.db") as db:
        return db.execute(query).fetchall()


def test_offline_sim_batch_gives_the_online_outputs(tmp_path: Path) -> None:
    items = topics(200)
    online = run(pipeline(), items, concurrency=50)
    batch = run(pipeline(), items, out=tmp_path / "batch", batch=True)
    assert online.items_succeeded == batch.items_succeeded == 200
    assert outputs(tmp_path / "batch") == [r.outputs for r in online.results()]
    chunks = ledger(tmp_path / "batch", "SELECT state, SUM(requests) FROM batch_chunks GROUP BY state")
    assert chunks == [("ended", 600)]  # every (item, stage) went through a batch, none twice
    report = read_report(tmp_path / "batch")
    assert report["cost_usd"] == 0.0 and online.to_dict()["batch"] is None
    section = report["batch"]
    assert section["chunks"]["submitted"] == section["chunks"]["done"] >= 3
    assert section["chunks"]["in_progress"] == section["chunks"]["failed"] == 0
    assert section["requests"]["submitted"] == section["requests"]["succeeded"] == 600
    assert section["request_ratio"] == 1.0
    assert section["provider_wait_seconds"] > 0
    assert "## Batches" in (tmp_path / "batch" / "report.md").read_text()


def test_one_stage_in_batch_mode_the_others_online(tmp_path: Path) -> None:
    data = json.loads(json.dumps(FAST_PIPELINE))
    data["stages"][1]["mode"] = "batch"
    data.update(batch=FAST_BATCH)
    items = topics(50)
    mixed = run(Pipeline.from_dict(data), items, out=tmp_path / "mixed")
    online = run(pipeline(), items)
    assert mixed.items_succeeded == 50
    assert outputs(tmp_path / "mixed") == [r.outputs for r in online.results()]
    rows = ledger(tmp_path / "mixed", "SELECT COUNT(*), COUNT(DISTINCT chunk_id) FROM batch_requests")
    assert rows[0][0] == 50  # only the write stage went through batches
    assert mixed.concurrency == 10_000  # batch mode keeps many chains in flight


def test_chunks_are_cut_at_the_cap(tmp_path: Path) -> None:
    capped = pipeline(batch={**FAST_BATCH, "max_requests": 40, "window": 0.3})
    report = run(capped, topics(100), out=tmp_path / "out", batch=True)
    assert report.items_succeeded == 100
    sizes = [r[0] for r in ledger(tmp_path / "out", "SELECT requests FROM batch_chunks")]
    assert max(sizes) <= 40 and sum(sizes) == 300


def test_a_batch_run_is_not_compared_with_one_at_a_time(tmp_path: Path) -> None:
    # it printed "one at a time would take 3 min 1 s (9.99x, 90% saved)" for an 18 s run: its
    # calls waited for the provider's batches, which one at a time would not
    report = run(pipeline(), topics(20), out=tmp_path / "batch", batch=True)
    summary = "\n".join(report.summary_lines())
    assert "one at a time" not in summary and "saved" not in summary, summary
    assert "in batch mode; compare it with online: `chainfleet plan PIPELINE --batch`" in summary
    saved = read_report(tmp_path / "batch")
    assert saved["speedup"] is None and saved["time_saved_pct"] is None
    md = (tmp_path / "batch" / "report.md").read_text(encoding="utf-8")
    assert "one at a time would take" not in md and "in batch mode" in md
    page = (tmp_path / "batch" / "report.html").read_text(encoding="utf-8")
    assert "wall time in batch mode" in page and "wall time; one at a time" not in page
