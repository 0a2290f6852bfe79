"""A full disk, for real: a 2 MB tmpfs fills mid-run. One line naming the folder and the space
to free, exit code 74, the resume command; then, with room again, the resume finishes and
nothing is lost. (CI runs as root and must mount it; elsewhere the test is skipped only when
mounting is impossible.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
ITEMS = 150
PIPELINE = """\
name: t
model: sim
sim: {latency: 0}
input: topic
stages:
  - {name: research, prompt: "Research {{ topic }}", max_tokens: 1200}
  - {name: write, prompt: "Write {{ topic }} from {{ research }}", max_tokens: 1200}
"""


def mount(point: Path, size: str, *, remount: bool = False) -> subprocess.CompletedProcess[str]:
    options = f"remount,size={size}" if remount else f"size={size}"
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    point = tmp_path / "disk"
    point.mkdir()
    mounted = mount(point, "2m") if sys.platform.startswith("linux") else None
    if mounted is None or mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount a tmpfs: {mounted.stderr if mounted else sys.platform}")
        pytest.skip("cannot mount a tmpfs here (not root, or not Linux)")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_full_disk_is_one_line_exit_74_and_resume_finishes_with_nothing_lost(
    tmp_path: Path, small_disk: Path
) -> None:
    (tmp_path / "p.yaml").write_text(PIPELINE, encoding="utf-8")
    (tmp_path / "t.txt").write_text("".join(f"topic {i}\n" for i in range(ITEMS)), encoding="utf-8")
    out = small_disk / "out"
    args = ["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "t.txt"), "--out", str(out), "-q"]
    full = subprocess.run([CHAINFLEET, *args], capture_output=True, text=True, timeout=120, check=False)
    assert full.returncode == 74, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr
    assert f"error: {out}: the disk is full" in lines[0] and "free at least" in lines[0]
    assert f"chainfleet resume {out}" in lines[0]
    assert mount(small_disk, "64m", remount=True).returncode == 0
    done = subprocess.run(
        [CHAINFLEET, "resume", str(out), "-q"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == ITEMS and {r["status"] for r in rows} == {"succeeded"}
    reused = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert reused["items"]["succeeded"] == ITEMS
