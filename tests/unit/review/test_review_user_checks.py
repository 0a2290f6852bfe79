"""A reviewer's edit is checked by the stage's gate; a ``check:`` function that raises there
refuses that edit, naming the check and the exception, as it fails only its item in a run (it
was called outside ``call_user`` and its exception escaped: a crash of the review)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from chainfleet import Pipeline, run
from chainfleet.review.session import EditRefused, ReviewSession
from conftest import pipeline_data


@pytest.fixture
def waiting(tmp_path: Path) -> Path:
    """Two items waiting at `write`, whose pipeline file now has a check that raises on "boom"."""
    data = pipeline_data()
    data["stages"][1]["review"] = "always"
    out = tmp_path / "o"
    assert run(Pipeline.from_dict(data), ["bees", "ants"], out=out).exit_code == 3
    data["stages"][1]["gate"] = "review_gates:breaks_on_boom"
    (tmp_path / "p.yaml").write_text(json.dumps(data), encoding="utf-8")
    with sqlite3.connect(out / "run.db") as db:
        db.execute("UPDATE runs SET settings = ?", (json.dumps({"pipeline_file": str(tmp_path / "p.yaml")}),))
    return out


def test_a_check_that_raises_on_an_edit_refuses_that_edit_only(waiting: Path) -> None:
    with ReviewSession.open(waiting, reviewer="ana") as session:
        with pytest.raises(EditRefused, match="gate check 'gate': RuntimeError: the boom table"):
            session.edit("1", "boom goes the article")
        assert [e.item_id for e in session.waiting()] == ["1", "2"]
        session.edit("1", "A fine article.")
        assert [e.item_id for e in session.waiting()] == ["2"]
