"""The interactive reviewer driven through a real pseudo-terminal (pexpect): the keys."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import chainfleet.cli.run  # noqa: F401 - registers the commands

pexpect = pytest.importorskip("pexpect")

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")

EDITOR = "import sys; t = open(sys.argv[1]).read(); open(sys.argv[1], 'w').write(t.upper() + ' EDITED')"


def spawn(out: Path, tmp_path: Path) -> pexpect.spawn:
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR, encoding="utf-8")
    env = {**os.environ, "EDITOR": f"{sys.executable} {editor}", "NO_COLOR": "1", "COLUMNS": "100"}
    child = pexpect.spawn(
        CHAINFLEET, ["review", str(out), "--reviewer", "tess"], env=env, encoding="utf-8", timeout=30
    )
    child.expect("4 waiting for review")
    return child


def test_the_keys_approve_edit_reject_skip_undo_and_quit(four_waiting: Path, tmp_path: Path) -> None:
    child = spawn(four_waiting, tmp_path)
    child.expect("1/4  item 1  at write")
    child.expect(r"\[q\]uit")
    child.send("a")
    child.expect("approved 1")
    child.expect("item 2  at write")
    child.expect(r"\[q\]uit")
    child.send("e")  # the editor script upper-cases the text
    child.expect("edited 2")
    child.expect("item 3  at write")
    child.expect(r"\[q\]uit")
    child.send("r")
    child.expect("note for the stage")
    child.sendline("Shorter, and cite a source.")
    child.expect("re-run from stage")
    child.sendline("research")
    child.expect("rejected 3: it re-runs from research")
    child.expect(r"\[q\]uit")
    child.send("u")  # take the rejection back: item 3 waits again
    child.expect("undone: 3 waits again")
    child.expect("item 3  at write")
    child.expect(r"\[q\]uit")
    child.send("s")
    child.expect("item 4  at write")
    child.expect(r"\[q\]uit")
    child.send("q")
    child.expect("2 decided here; go on with: chainfleet resume")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    with sqlite3.connect(four_waiting / "run.db") as db:
        rows = db.execute(
            "SELECT item_id, action, reviewer, note, from_stage, after, undone IS NOT NULL "
            "FROM review_decisions ORDER BY did"
        ).fetchall()
        states = dict(db.execute("SELECT item_id, state FROM review_queue"))
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("1", "approve", "tess"),
        ("2", "edit", "tess"),
        ("3", "reject", "tess"),
    ]
    assert rows[1][5].endswith(" EDITED") and rows[1][5].startswith("<!-- SIMULATED")
    assert rows[2][3:5] == ("Shorter, and cite a source.", "research") and rows[2][6] == 1
    assert states == {"1": "approved", "2": "edited", "3": "waiting", "4": "waiting"}


def test_a_skip_says_so_and_the_counter_goes_on(four_waiting: Path, tmp_path: Path) -> None:
    # after a skip the counter said "1/4" again (for item 2), and the skip printed nothing
    child = spawn(four_waiting, tmp_path)
    child.expect("1/4  item 1  at write")
    child.expect(r"\[q\]uit")
    child.send("s")
    child.expect("skipped 1: it waits; it comes round again")
    child.expect("2/4  item 2  at write")
    child.expect(r"\[q\]uit")
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_an_item_back_from_a_rejection_shows_the_reviewers_note(four_waiting: Path, tmp_path: Path) -> None:
    # it showed only "why: ..." for the item that came back, not what the reviewer had asked
    env = {**os.environ, "NO_COLOR": "1"}
    note = "Shorter, and cite a source."
    rejected = subprocess.run(
        [CHAINFLEET, "review", str(four_waiting), "--reject", "1", "--note", note],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rejected.returncode == 0, rejected.stderr
    resumed = subprocess.run(
        [CHAINFLEET, "resume", str(four_waiting), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert resumed.returncode == 3, resumed.stderr  # item 1 re-ran its write and waits again
    child = spawn(four_waiting, tmp_path)
    child.expect("1/4  item 1  at write")
    child.expect(r"\[q\]uit")
    panel = " ".join(part.strip(" │\r") for part in child.before.splitlines())  # unwrapped
    assert f"sent back before with the note: {note}" in " ".join(panel.split()), panel
    child.send("q")
    child.expect(pexpect.EOF)
    child.close()
