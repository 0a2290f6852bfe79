"""The ``chainfleet`` command as a user meets it, run in-process with click's CliRunner: exit
codes, messages, the output folder."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import chainfleet.cli.demo
import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet.cli import cli
from conftest import FAST_PIPELINE, POISONED, TOPICS, read_report, read_results

# (no "output": each output is stored once, the final one as outputs[<last stage>]; issue 11)
RESULT_KEYS = {"id", "input", "status", "outputs", "error", "attempts", "seconds"}

STAGES = ["research", "write", "edit"]


def chainfleet(*args: str | os.PathLike[str]) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_no_results(out: Path) -> None:
    for name in ("results.jsonl", "report.json", "report.md", "items"):
        assert not (out / name).exists(), f"{name} was written for a run that never started"


def the_error_line(result: Result) -> str:
    """The single ``error:`` line a bad-usage exit prints on stderr (and nothing on stdout)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert result.stdout == ""
    return lines[0]


# -- a good run --------------------------------------------------------------------------------


def test_run_writes_the_whole_output_folder(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "--input", topics_file(), "--out", out, "-q")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert f"{len(TOPICS)}/{len(TOPICS)} items succeeded" in result.stdout
    assert str(out) in result.stdout
    assert {p.name for p in out.iterdir()} >= {"results.jsonl", "report.json", "report.md", "items", "run.db"}

    results = read_results(out)
    assert [r["input"]["topic"] for r in results] == TOPICS
    assert [r["id"] for r in results] == ["1", "2", "3", "4", "5"]
    for r in results:
        assert set(r) >= RESULT_KEYS
        assert r["status"] == "succeeded"
        assert list(r["outputs"]) == STAGES
        assert r["outputs"]["edit"] and "output" not in r  # each output once: the final is the last stage's
        assert r["error"] is None
        assert r["attempts"] == 3
        assert r["seconds"] >= 0

    items = sorted((out / "items").iterdir())
    assert len(items) == len(TOPICS)
    assert all(p.suffix == ".md" for p in items)


def test_report_json_has_the_documented_keys(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    out = tmp_path / "out"

    chainfleet("run", write_pipeline(), "-i", topics_file(), "-o", out, "-q", "-c", "3")
    report = read_report(out)

    assert set(report) >= {
        "run_id",
        "pipeline",
        "concurrency",
        "items",
        "wall_seconds",
        "sequential_seconds",
        "speedup",
        "time_saved_pct",
        "calls",
        "tokens",
        "cost_usd",
        "stages",
        "failures",
    }
    assert report["pipeline"] == "content"
    assert report["concurrency"] == 3
    assert report["items"]["total"] == 5
    assert report["items"]["succeeded"] == 5
    assert report["items"]["failed"] == 0
    assert set(report["calls"]) >= {"total", "succeeded", "retried", "rate_limited", "failed"}
    assert report["calls"]["total"] == report["calls"]["succeeded"] == 15
    assert report["tokens"]["input"] > 0 and report["tokens"]["output"] > 0
    assert report["cost_usd"] == 0.0  # the simulated model is free
    assert list(report["stages"]) == STAGES
    for stage in report["stages"].values():
        assert set(stage) >= {"calls", "p50_seconds", "p95_seconds", "max_seconds"}
        assert stage["calls"] == 5
        assert 0 <= stage["p50_seconds"] <= stage["p95_seconds"] <= stage["max_seconds"]
    assert report["failures"] == []
    assert report["wall_seconds"] >= 0 and report["sequential_seconds"] >= 0


def test_run_without_out_writes_into_runs_run_id(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    write_pipeline: Callable[..., Path],
    topics_file: Callable[..., Path],
) -> None:
    monkeypatch.chdir(tmp_path)

    result = chainfleet("run", write_pipeline(), "-i", topics_file(), "-q")

    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    assert read_report(folder)["run_id"] == folder.name
    assert f"runs/{folder.name}" in result.stdout


@pytest.mark.parametrize(
    ("flags", "concurrency"),
    [(["--sequential"], 1), (["-c", "3"], 3), (["--concurrency", "2"], 2), ([], 5)],
)
def test_concurrency_flags_reach_the_report(
    tmp_path: Path,
    write_pipeline: Callable[..., Path],
    topics_file: Callable[..., Path],
    flags: list[str],
    concurrency: int,
) -> None:
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "-i", topics_file(), "-o", out, "-q", *flags)

    assert result.exit_code == 0, result.output
    assert read_report(out)["concurrency"] == concurrency
    assert f"at concurrency {concurrency}" in result.stdout


def test_model_sim_flag_works(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "-i", topics_file(), "-o", out, "-q", "--model", "sim")

    assert result.exit_code == 0, result.output
    assert read_report(out)["items"]["succeeded"] == len(TOPICS)


def test_csv_input_ids_come_from_the_id_column(tmp_path: Path, write_pipeline: Callable[..., Path]) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("id,topic\nalpha,solar power\nbeta,tidal energy\ngamma,wind farms\n", encoding="utf-8")
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "-i", rows, "-o", out, "-q")

    assert result.exit_code == 0, result.output
    results = read_results(out)
    assert [r["id"] for r in results] == ["alpha", "beta", "gamma"]
    assert [r["input"]["topic"] for r in results] == ["solar power", "tidal energy", "wind farms"]
    assert all(r["status"] == "succeeded" for r in results)


def test_jsonl_input_ids_come_from_the_id_field(tmp_path: Path, write_pipeline: Callable[..., Path]) -> None:
    rows = tmp_path / "rows.jsonl"
    objects = [{"id": "q-17", "topic": "solar power"}, {"id": 42, "topic": "tidal energy"}]
    rows.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "-i", rows, "-o", out, "-q")

    assert result.exit_code == 0, result.output
    results = read_results(out)
    assert [r["id"] for r in results] == ["q-17", "42"]
    assert [r["input"]["topic"] for r in results] == ["solar power", "tidal energy"]


def test_outputs_are_identical_at_any_concurrency(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    # jitter makes calls finish out of order at -c 4; the outputs must not care
    pipeline = write_pipeline(sim={"latency": 0.001, "jitter": 0.01})
    topics = topics_file()

    for c in ("1", "4"):
        result = chainfleet("run", pipeline, "-i", topics, "-o", tmp_path / f"c{c}", "-q", "-c", c)
        assert result.exit_code == 0, result.output

    one, four = read_results(tmp_path / "c1"), read_results(tmp_path / "c4")
    assert [r["id"] for r in one] == [r["id"] for r in four]
    assert [r["outputs"] for r in one] == [r["outputs"] for r in four]


def test_a_run_that_saved_no_time_does_not_blame_backoff_that_never_happened(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    # At latency 0 the run's overhead can exceed the (zero) service time, so no time is saved;
    # with no retry at all the summary must not say the time "went on backoff waits".
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "-i", topics_file(), "-o", out, "-q")

    assert read_report(out)["calls"]["retried"] == 0
    assert "backoff" not in result.stdout, result.stdout


# -- items that fail -------------------------------------------------------------------------------



@pytest.mark.parametrize(
    ("flags", "attempts"),
    [
        (["--max-attempts", "1", "--retry-passes", "0"], 1),
        (["--max-attempts", "1"], 2),  # the default one retry pass runs the failed item again
        (["--max-attempts", "1", "--retry-passes", "2"], 3),
    ],
)
def test_an_item_that_always_fails_exits_1_and_the_rest_succeed(
    tmp_path: Path,
    write_pipeline: Callable[..., Path],
    topics_file: Callable[..., Path],
    flags: list[str],
    attempts: int,
) -> None:
    out = tmp_path / "out"
    pipeline = write_pipeline(sim={"fail_on": ["poison"]})

    result = chainfleet("run", pipeline, "-i", topics_file(POISONED), "-o", out, "-q", *flags)

    assert result.exit_code == 1, result.output
    results = read_results(out)
    assert [r["status"] for r in results] == ["succeeded", "succeeded", "failed", "succeeded", "succeeded"]
    failed = results[2]
    assert failed["id"] == "3"
    assert "edit" not in failed["outputs"]
    assert failed["error"]["stage"] == "research"
    assert failed["error"]["type"] == "server_error"
    assert "500" in failed["error"]["message"]
    assert failed["attempts"] == attempts
    assert all(r["outputs"]["edit"] for r in results if r["status"] == "succeeded")

    report = read_report(out)
    assert (report["items"]["total"], report["items"]["succeeded"], report["items"]["failed"]) == (5, 4, 1)
    assert report["calls"]["failed"] == 1  # the last attempt failed for good; the others were retried
    assert report["calls"]["failed_attempts"] == attempts
    (failure,) = report["failures"]
    assert failure["id"] == "3"
    assert failure["stage"] == "research"
    assert failure["type"] == "server_error"
    assert failure["message"] == failed["error"]["message"]

    assert "4/5 items succeeded, 1 failed" in result.stdout
    assert "item 3 failed at research: server_error" in result.stdout
    assert len(list((out / "items").iterdir())) == 5


def test_default_retries_back_off_and_then_the_retry_pass_runs(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    # --max-attempts 2 keeps the one backoff wait per pass under a second
    out = tmp_path / "out"
    pipeline = write_pipeline(sim={"fail_on": ["poison"]})

    result = chainfleet("run", pipeline, "-i", topics_file(POISONED), "-o", out, "-q", "--max-attempts", "2")

    assert result.exit_code == 1, result.output
    failed = read_results(out)[2]
    assert failed["attempts"] == 4  # 2 attempts in the main pass, 2 more in the retry pass
    report = read_report(out)
    assert report["calls"]["retried"] == 2
    assert report["calls"]["failed"] == 1  # only the attempt after which nothing was tried again
    assert report["calls"]["failed_attempts"] == 4


# -- bad usage: exit 2, one line, nothing written ------------------------------------------------


def test_missing_pipeline_file(tmp_path: Path, topics_file: Callable[..., Path]) -> None:
    out = tmp_path / "out"

    result = chainfleet("run", tmp_path / "nope.yaml", "-i", topics_file(), "-o", out, "-q")

    assert result.exit_code == 2
    line = the_error_line(result)
    assert "nope.yaml" in line
    assert "No such file" in line or "not found" in line
    assert_no_results(out)


def test_pipeline_with_a_typo_key_names_file_line_stage_and_key(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    path = write_pipeline()
    text = path.read_text(encoding="utf-8").replace("prompt: 'Research", "promt: 'Research")
    path.write_text(text, encoding="utf-8")
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if "promt:" in line)
    out = tmp_path / "out"

    result = chainfleet("run", path, "-i", topics_file(), "-o", out, "-q")

    assert result.exit_code == 2
    line = the_error_line(result)
    assert f"{path.name}:{line_no}" in line
    assert "research" in line
    assert "promt" in line
    assert "prompt" in line.split("promt", 1)[1]  # the suggestion
    assert_no_results(out)


def test_template_naming_a_missing_input_field(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    stages = pipeline_stages()
    stages[0]["prompt"] = "Research {{ topc }}: the key facts."
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(stages=stages), "-i", topics_file(), "-o", out, "-q")

    assert result.exit_code == 2
    line = the_error_line(result)
    assert "pipeline.yaml" in line
    assert "research" in line
    assert "topc" in line
    assert "{{ topic }}" in line  # did you mean
    assert_no_results(out)


def test_missing_input_file(tmp_path: Path, write_pipeline: Callable[..., Path]) -> None:
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "-i", tmp_path / "missing.txt", "-o", out, "-q")

    assert result.exit_code == 2
    line = the_error_line(result)
    assert "missing.txt" in line
    assert_no_results(out)


def test_malformed_jsonl_line_names_file_and_line(
    tmp_path: Path, write_pipeline: Callable[..., Path]
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"topic": "solar"}\n{"topic": "wind"}\n{"topic": \n{"topic": "tides"}\n', encoding="utf-8"
    )
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "-i", rows, "-o", out, "-q")

    assert result.exit_code == 2
    line = the_error_line(result)
    assert "rows.jsonl:3" in line
    assert_no_results(out)


def test_jsonl_line_without_the_template_field_names_file_and_line(
    tmp_path: Path, write_pipeline: Callable[..., Path]
) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "solar"}\n{"title": "wind"}\n', encoding="utf-8")
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "-i", rows, "-o", out, "-q")

    assert result.exit_code == 2
    line = the_error_line(result)
    assert "rows.jsonl:2" in line
    assert "topic" in line
    assert_no_results(out)


@pytest.mark.parametrize("model", ["foo:bar", "gpt-4o"])
def test_unknown_model_provider(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], model: str
) -> None:
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(), "-i", topics_file(), "-o", out, "-q", "--model", model)

    assert result.exit_code == 2
    line = the_error_line(result)
    assert "--model" in line
    assert model.split(":")[0] in line
    assert_no_results(out)


def test_sequential_and_concurrency_together(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    out = tmp_path / "out"

    result = chainfleet(
        "run", write_pipeline(), "-i", topics_file(), "-o", out, "-q", "--sequential", "-c", "3"
    )

    assert result.exit_code == 2
    line = the_error_line(result)
    assert "--sequential" in line and "--concurrency" in line
    assert_no_results(out)


def test_openai_model_flag_exits_2_before_any_call(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    out = tmp_path / "out"
    args = ["run", write_pipeline(), "-i", topics_file(), "-o", out, "-q"]

    result = chainfleet(*args, "--model", "openai:gpt-4o-mini")

    assert result.exit_code == 2
    line = the_error_line(result)
    assert "openai" in line
    # the model came from the flag, not from the pipeline file (which says sim): say so
    assert "--model" in line
    assert_no_results(out)


def test_openai_model_in_the_pipeline_names_the_file_and_stage(
    tmp_path: Path, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path]
) -> None:
    stages = pipeline_stages()
    stages[1]["model"] = "openai:gpt-4o-mini"
    out = tmp_path / "out"

    result = chainfleet("run", write_pipeline(stages=stages), "-i", topics_file(), "-o", out, "-q")

    assert result.exit_code == 2
    line = the_error_line(result)
    assert "openai" in line
    assert "pipeline.yaml" in line  # which file to edit
    assert "write" in line  # and which stage
    assert_no_results(out)


def pipeline_stages() -> list[dict[str, object]]:
    return [dict(stage) for stage in FAST_PIPELINE["stages"]]


# -- demo --------------------------------------------------------------------------------------


def test_demo_compares_sequential_and_parallel(tmp_path: Path) -> None:
    out = tmp_path / "demo"

    result = chainfleet("demo", "--latency", "0.01", "--out", out)

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "one at a time" in text
    assert "parallel, concurrency 2" in text
    assert text.count(" s ") >= 2  # both total times
    assert "Outputs identical between the two modes: yes" in text
    assert "Time saved" in text
    from chainfleet.runner.demo import DEMO_TOPICS

    quality = text.split("Quality of each output", 1)[1]
    for topic in DEMO_TOPICS:
        assert topic[:50] in quality

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report) >= {"sequential", "parallel", "time_saved_pct", "outputs_identical"}
    assert report["outputs_identical"] is True
    assert report["sequential"]["concurrency"] == 1
    assert report["parallel"]["concurrency"] == 2
    for mode in ("sequential", "parallel"):
        assert report[mode]["items"]["succeeded"] == 3
        assert len(read_results(out / mode)) == 3
    assert f"{report['time_saved_pct']:.0f}%" in text


def test_demo_concurrency_flag(tmp_path: Path) -> None:
    out = tmp_path / "demo"

    result = chainfleet("demo", "--latency", "0", "-c", "3", "--out", out)

    assert result.exit_code == 0, result.output
    assert "parallel, concurrency 3" in result.stdout
    assert json.loads((out / "report.json").read_text())["parallel"]["concurrency"] == 3


# -- help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "example"),
    [
        ([], "chainfleet demo"),
        (["run"], "chainfleet run examples/content.yaml"),
        (["demo"], "chainfleet demo --concurrency"),
    ],
)
def test_help_shows_examples(args: list[str], example: str) -> None:
    result = chainfleet(*args, "--help")

    assert result.exit_code == 0
    assert example in result.stdout
    if not args:
        assert "run" in result.stdout and "demo" in result.stdout
