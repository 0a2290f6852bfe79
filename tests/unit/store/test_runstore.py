"""The run store on a long run: its write-ahead log is checkpointed every ``WAL_PAGES`` pages and
cut back after, so it stays small whatever the run's size."""

from __future__ import annotations

from pathlib import Path

from chainfleet.store import runstore as store_module
from chainfleet.store.runstore import RunStore


def test_the_wal_stays_small_on_a_long_run(tmp_path: Path) -> None:
    with RunStore.open(tmp_path / "run.db") as store:
        store.begin_run("r", pipeline="p", settings={})
        for index in range(3000):
            store.save_stage(
                "r", index, "a", "x" * 8000, input_tokens=1, output_tokens=1, seconds=0, attempts=1
            )
        wal = tmp_path / "run.db-wal"
        assert wal.stat().st_size <= 2 * store_module.WAL_PAGES * 4096  # 24 MB of results went through
