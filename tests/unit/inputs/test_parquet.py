"""Parquet inputs: a file pandas wrote, and a folder of files Hugging Face ``datasets`` wrote,
read through a run; columns become fields, ``--id-column`` picks the id, a bad row is named as
``file:row``, and a big file is read a batch of rows at a time, never whole."""

from __future__ import annotations

import json
from pathlib import Path

import datasets  # the dev extra has pandas, pyarrow and datasets: no skip
import pandas as pd
import pytest
from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet import Pipeline, run
from chainfleet.cli import cli
from chainfleet.errors import ConfigError, InputError
from chainfleet.inputs import open_input
from chainfleet.inputs.parquet import BATCH_ROWS

PIPELINE = {
    "name": "rows",
    "model": "sim",
    "sim": {"latency": 0},
    "input": "topic",
    "stages": [{"name": "write", "prompt": "Write about {{ topic }} for {{ audience }}.", "max_tokens": 60}],
}


def results(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_file_pandas_wrote_runs_with_its_columns_as_fields(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"doc_id": ["a1", "b2", "c3"], "topic": ["bees", "ants", "moths"], "audience": ["kids"] * 3}
    )
    frame.to_parquet(tmp_path / "rows.parquet")

    source = open_input(tmp_path / "rows.parquet", id_column="doc_id")
    assert source.fields == {"doc_id", "topic", "audience"}
    report = run(Pipeline.from_dict(PIPELINE), source, out=tmp_path / "out")

    assert report.exit_code == 0
    rows = results(tmp_path / "out")
    assert [(r["id"], r["input"]["topic"]) for r in rows] == [("a1", "bees"), ("b2", "ants"), ("c3", "moths")]
    assert all(r["status"] == "succeeded" and r["outputs"]["write"] for r in rows)


def test_a_folder_datasets_wrote_reads_as_one_input(tmp_path: Path) -> None:
    data = datasets.Dataset.from_dict(
        {"topic": [f"topic {i}" for i in range(10)], "audience": ["engineers"] * 10, "n": list(range(10))}
    )
    folder = tmp_path / "data"
    folder.mkdir()
    for shard in range(2):  # as a data set is kept on the Hub: data/train-0000N-of-00002.parquet
        data.shard(2, shard, contiguous=True).to_parquet(str(folder / f"train-{shard:05d}-of-00002.parquet"))

    report = run(Pipeline.from_dict(PIPELINE), str(folder), out=tmp_path / "out")

    assert report.exit_code == 0 and report.items_succeeded == 10
    rows = results(tmp_path / "out")
    assert [r["id"] for r in rows] == [str(i) for i in range(1, 11)]  # the row number in the set
    assert [r["input"]["n"] for r in rows] == list(range(10))


def test_a_bad_row_is_named_by_file_and_row_before_any_call(tmp_path: Path) -> None:
    frame = pd.DataFrame({"doc_id": ["a", None, "c"], "topic": ["x", "y", "z"], "audience": ["all"] * 3})
    frame.to_parquet(tmp_path / "rows.parquet")
    (tmp_path / "p.yaml").write_text(json.dumps(PIPELINE), encoding="utf-8")

    result = CliRunner().invoke(
        cli,
        [
            "run",
            str(tmp_path / "p.yaml"),
            "-i",
            str(tmp_path / "rows.parquet"),
            "--id-column",
            "doc_id",
            "--out",
            str(tmp_path / "out"),
        ],
    )

    assert result.exit_code == 2, result.output
    assert (
        f"error: {tmp_path / 'rows.parquet'}:2: id column 'doc_id' must be a string or a number, got null"
        in (result.stderr)
    )
    assert not (tmp_path / "out" / "results.jsonl").exists()
    wrong = CliRunner().invoke(
        cli, ["run", str(tmp_path / "p.yaml"), "-i", str(tmp_path / "rows.parquet"), "--id-column", "docid"]
    )
    assert wrong.exit_code == 2 and "error: --id-column: no column 'docid'" in wrong.stderr


def test_a_folder_whose_files_disagree_is_refused(tmp_path: Path) -> None:
    pd.DataFrame({"topic": ["a"]}).to_parquet(tmp_path / "a.parquet")
    pd.DataFrame({"subject": ["b"]}).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(InputError, match="are not those of a.parquet"):
        open_input(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is a directory, not an input file"):
        open_input(tmp_path / "empty")
    with pytest.raises(ConfigError, match="for Parquet inputs"):
        open_input(tmp_path / "a.jsonl", id_column="x")


def read_so_far() -> int:
    """Bytes this process has read from files so far (Linux's /proc/self/io)."""
    with open("/proc/self/io", encoding="ascii") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))


def test_a_big_file_is_read_a_batch_of_rows_at_a_time(tmp_path: Path) -> None:
    rows = 500 * BATCH_ROWS
    frame = pd.DataFrame({"topic": [f"a fairly long topic name, number {i:08d}" for i in range(rows)]})
    frame.to_parquet(tmp_path / "big.parquet", row_group_size=BATCH_ROWS)
    size = (tmp_path / "big.parquet").stat().st_size

    items = iter(open_input(tmp_path / "big.parquet"))
    before = read_so_far()
    first = next(items)
    read = read_so_far() - before

    assert first.fields == {"topic": "a fairly long topic name, number 00000000"}
    assert read < size / 10, (read, size)  # a row group, not the file (pyarrow pre-buffered it all)
    following = [next(items).fields["topic"] for _ in range(2 * BATCH_ROWS)]  # over a batch's end
    assert following[-1] == f"a fairly long topic name, number {2 * BATCH_ROWS:08d}"
