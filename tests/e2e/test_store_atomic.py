"""A store is created, and upgraded, in one transaction: kill -9 at any point of it leaves no
store or a complete one, and the next run or resume just works. A test hook
(``CHAINFLEET_TEST_KILL_AT``, read only by the store's migrations) kills at a named point."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chainfleet.store import migrations
from chainfleet.store.migrations import MIGRATIONS
from chainfleet.store.runstore import RunStore

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")

PIPELINE = (
    "name: t\nmodel: sim\nsim: {latency: 0}\ninput: topic\nstages:\n  - {name: a, prompt: 'A {{ topic }}'}\n"
)


def cli(tmp_path: Path, *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CHAINFLEET_TEST_KILL_AT"}
    if kill_at:
        env["CHAINFLEET_TEST_KILL_AT"] = kill_at
    return subprocess.run(
        [CHAINFLEET, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False
    )


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    (tmp_path / "p.yaml").write_text(PIPELINE, encoding="utf-8")
    (tmp_path / "t.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    return ["run", "p.yaml", "-i", "t.txt", "--out", "out", "-q"]


def version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def succeeded(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["status"] for line in lines]


@pytest.mark.parametrize("point", sorted({1, len(MIGRATIONS)}))
def test_kill_9_inside_store_creation_leaves_a_folder_that_runs_and_resumes(
    tmp_path: Path, files: list[str], point: int
) -> None:
    killed = cli(tmp_path, *files, kill_at=f"migration-{point}")
    assert killed.returncode == -9, killed.stderr
    assert version(tmp_path / "out" / "run.db") == 0  # nothing of the half-made store was kept
    nothing = cli(tmp_path, "resume", "out")
    assert nothing.returncode == 2 and "holds no run" in nothing.stderr and "Traceback" not in nothing.stderr
    # issue 22, D2: it says what to do, and that nothing was paid
    assert (
        "nothing was paid" in nothing.stderr
        and "chainfleet run PIPELINE -i INPUT -o out --resume" in nothing.stderr
    )
    done = cli(tmp_path, *files, "--resume")
    assert done.returncode == 0, done.stderr
    assert succeeded(tmp_path) == ["succeeded"] * 3
    assert version(tmp_path / "out" / "run.db") == len(MIGRATIONS)


def test_kill_9_inside_an_upgrade_keeps_the_old_store_whole_then_upgrades(
    tmp_path: Path, files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:-1])
    RunStore.open(tmp_path / "out" / "run.db").close()  # a store one version old
    monkeypatch.undo()
    old = len(MIGRATIONS) - 1
    killed = cli(tmp_path, *files, kill_at=f"migration-{len(MIGRATIONS)}")
    assert killed.returncode == -9, killed.stderr
    assert version(tmp_path / "out" / "run.db") == old
    with RunStore.open(tmp_path / "out" / "run.db") as upgraded:  # and it opens (upgrading) fine
        assert upgraded.runs() == []
    done = cli(tmp_path, *files)
    assert done.returncode == 0, done.stderr
    assert succeeded(tmp_path) == ["succeeded"] * 3
