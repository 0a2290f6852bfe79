"""The output folder across processes: an item's file name is the same in another interpreter,
parquet without pyarrow is one line and exit 2, and a signal during the output phase stops it
and ``chainfleet report`` finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chainfleet.report.output import safe_name
from conftest import read_report, read_results


def test_safe_name_is_the_same_in_another_process() -> None:
    # names must not depend on the process (hash randomization): a resumed run finds its files
    ids = ["a/b", "../../etc/passwd", "con", "🚀", "x" * 300]
    code = (
        "import sys; from chainfleet.report.output import safe_name; "
        "print([safe_name(i) for i in sys.argv[1:]])"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", code, *ids], capture_output=True, text=True, env=env, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == repr([safe_name(i) for i in ids])


def test_parquet_without_pyarrow_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
        "from chainfleet.cli import main; main()"
    )
    topics = tmp_path / "t.txt"
    topics.write_text("a\n", encoding="utf-8")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("model: sim\nstages:\n  - name: w\n    prompt: 'W {{ input }}'\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "run",
            str(pipeline),
            "-i",
            str(topics),
            "-o",
            str(tmp_path / "o"),
            "--parquet",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --parquet: results.parquet needs pyarrow: pip install 'chainfleet[parquet]'"
    ]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_output_phase_stops_it_and_report_finishes_it(
    tmp_path: Path, signum: int
) -> None:
    items = 20_000  # item files for all of them: an output phase of a few seconds
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "name: big\nmodel: sim\nsim: {latency: 0}\ninput: topic\n"
        "stages:\n  - name: w\n    prompt: 'Write on {{ topic }}'\n    max_tokens: 60\n",
        encoding="utf-8",
    )
    topics = tmp_path / "t.txt"
    topics.write_text("".join(f"topic {i}\n" for i in range(items)), encoding="utf-8")
    out = tmp_path / "out"
    chainfleet = str(Path(sys.executable).parent / "chainfleet")
    args = [chainfleet, "run", str(pipeline), "-i", str(topics), "-o", str(out), "-c", "200"]
    proc = subprocess.Popen(
        [*args, "--item-files", "all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the output phase's progress line: it is under way
        seen.append(line)
        if line.startswith("writing the output:"):
            break
    proc.send_signal(signum)
    _, rest = proc.communicate(timeout=60)
    stderr = "".join(seen) + rest

    assert proc.returncode == 130, stderr
    assert "received while writing the output: stopped" in stderr
    assert f"chainfleet report {out}" in stderr
    assert not (out / "results.jsonl").exists()  # never half a file
    assert not list(out.rglob("*.tmp"))
    assert 0 < len(list((out / "items").glob("*.md"))) < items
    listed = subprocess.run(
        [chainfleet, "runs", str(out)], capture_output=True, text=True, check=True, timeout=60
    )
    assert "done, output unfinished" in listed.stdout

    done = subprocess.run(
        [chainfleet, "report", str(out), "--item-files", "none", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    rows = read_results(out)
    assert len(rows) == items and {r["status"] for r in rows} == {"succeeded"}
    assert read_report(out)["items"]["succeeded"] == items
    listed = subprocess.run(
        [chainfleet, "runs", str(out)], capture_output=True, text=True, check=True, timeout=60
    )
    assert "output unfinished" not in listed.stdout
