"""Big inputs at full scale: a 300,000-line file streams and is scanned in bounded memory, as
tracemalloc measures it. In-process, but tracing every allocation of 300,000 lines takes tens
of seconds, so these run with the end-to-end tests rather than in the fast loop."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

from chainfleet.inputs.source import open_input

# -- memory --------------------------------------------------------------------------------


def traced_peak(run: object) -> tuple[object, int]:
    assert callable(run)
    tracemalloc.start()
    try:
        result = run()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_big_file_streams_in_constant_memory(tmp_path: Path) -> None:
    lines = 300_000
    path = tmp_path / "big.txt"
    with path.open("w", encoding="utf-8") as file:
        file.writelines(f"topic number {n} about something\n" for n in range(lines))
    source = open_input(path)

    count, iter_peak = traced_peak(lambda: sum(1 for _ in source))
    scanned, scan_peak = traced_peak(source.scan)

    assert count == scanned == lines
    # the file alone is ~10 MB; holding its items would take well over 50 MB
    assert iter_peak < 2_000_000
    assert scan_peak < 2_000_000  # text ids are line numbers: unique without remembering them


def test_scanning_ids_stays_within_the_digest_budget(tmp_path: Path) -> None:
    lines = 300_000
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as file:
        file.writelines(
            json.dumps({"id": f"{n:08d}-{'a-long-slug-made-from-the-title-' * 3}", "input": "x"}) + "\n"
            for n in range(lines)
        )

    scanned, peak = traced_peak(open_input(path).scan)

    assert scanned == lines
    # a set of the digests takes ~20 MB; a set of these ids would take ~55 MB, the items far more
    assert peak < 40_000_000
