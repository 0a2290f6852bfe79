"""examples/content_gated.yaml, the worked pipeline of contracts and gates, loads and runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet import Pipeline, run
from chainfleet.cli import cli
from chainfleet.pipeline.contracts import Contract
from conftest import read_report, read_results

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE = EXAMPLES / "content_gated.yaml"
TOPICS = [
    line for line in (EXAMPLES / "topics.txt").read_text().splitlines() if line and not line.startswith("#")
]


def fast() -> Pipeline:
    """The example as it is, but without its simulated latency."""
    pipeline = Pipeline.from_yaml(EXAMPLE)
    return pipeline.model_copy(update={"sim": pipeline.sim.model_copy(update={"latency": 0, "jitter": 0})})


def test_the_example_reads_its_schema_file_and_gates() -> None:
    pipeline = Pipeline.from_yaml(EXAMPLE)

    research, write, edit = pipeline.stages
    assert research.contract is not None and research.contract.source is not None
    assert research.contract.source.endswith("schemas/research.json")
    assert research.contract.schema == json.loads((EXAMPLES / "schemas" / "research.json").read_text())
    assert [c.kind for c in write.checks] == ["min_words", "max_words", "must_not_include", "judge"]
    assert write.failure_action == "revise" and write.max_revisions == 2 and write.then == "fail"
    assert edit.contract is None and not edit.checks


def test_the_example_runs_end_to_end_with_repairs_revisions_and_a_judge(tmp_path: Path) -> None:
    report = run(fast(), TOPICS, out=tmp_path)

    assert report.exit_code == 0 and report.items_succeeded == len(TOPICS)
    schema = Contract.from_value({"schema_file": "schemas/research.json"}, base=EXAMPLES)
    records = read_results(tmp_path)
    for record in records:
        assert schema.problem(record["outputs"]["research"]) is None  # a JSON value, not a string
        assert isinstance(record["outputs"]["write"], str) and record["outputs"]["edit"]
        assert record["gates"]["write"]["outcome"] == "passed"
    gates = read_report(tmp_path)["gates"]
    write = gates["stages"]["write"]
    assert write["revisions_per_item"] > 0  # some drafts failed the judge and were revised
    assert (
        write["checks"]["editor"]["first_try_pass_pct"] < 100 == write["checks"]["editor"]["final_pass_pct"]
    )
    assert gates["repairs"]["research"] > 0  # the simulated model broke some replies on purpose
    assert gates["judge_calls"] >= len(TOPICS)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| write | editor |" in md


def test_the_example_runs_from_the_command_line(tmp_path: Path) -> None:
    topics = tmp_path / "topics.txt"
    topics.write_text("".join(f"{t}\n" for t in TOPICS[:3]), encoding="utf-8")

    result = CliRunner().invoke(
        cli, ["run", str(EXAMPLE), "-i", str(topics), "-o", str(tmp_path / "o"), "-q"]
    )

    assert result.exit_code == 0, result.output
    assert "3/3 items succeeded" in result.stdout
    assert len(read_results(tmp_path / "o")) == 3


def test_a_misspelled_property_in_the_example_is_exit_2_with_did_you_mean(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "schemas", tmp_path / "schemas")
    broken = tmp_path / "content_gated.yaml"
    broken.write_text(EXAMPLE.read_text().replace("research.facts | join", "research.fact | join"))
    topics = tmp_path / "topics.txt"
    topics.write_text("tea\n")

    result = CliRunner().invoke(cli, ["run", str(broken), "-i", str(topics), "-o", str(tmp_path / "o")])

    assert result.exit_code == 2
    assert "stage 'write'" in result.stderr and "did you mean {{ research.facts }}?" in result.stderr
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_each_items_research_is_about_its_topic_not_the_system_prompt(tmp_path: Path) -> None:
    # the sim read its subject from the system line first: every item's research was about
    # "You are a meticulous research agent", its sources titled "Are A Meticulous Research Agent"
    run(fast(), TOPICS[:4], out=tmp_path)
    for record in read_results(tmp_path):
        topic, research = record["input"]["topic"], record["outputs"]["research"]
        text = json.dumps(research)
        assert "meticulous" not in text.lower() and "research agent" not in text.lower(), text
        assert any(topic in fact for fact in research["facts"]), research["facts"]
        assert all(source["title"].lower().startswith(topic.lower()) for source in research["sources"])
        assert all(q.endswith("?") for q in research["open_questions"]), research["open_questions"]
        assert len(set(research["facts"])) == len(research["facts"])  # no fact said twice


def test_the_terminal_summary_says_the_revisions_and_repairs(tmp_path: Path) -> None:
    # the summary said calls and tokens, not what the gates cost: the gated run's revisions and
    # repairs were only in report.md
    report = run(fast(), TOPICS, out=tmp_path)
    gates = read_report(tmp_path)["gates"]
    revisions = round(sum(s["revisions_per_item"] * s["items"] for s in gates["stages"].values()))
    repairs = sum(gates["repairs"].values())
    line = next(line for line in report.summary_lines() if line.startswith("gates: "))
    assert line.startswith(
        f"gates: {revisions} revision{'' if revisions == 1 else 's'}, "
        f"{repairs} repair{'' if repairs == 1 else 's'}, {gates['judge_calls']} judge calls"
    ), line
    assert repairs > 0 and "research: " in line  # the sim breaks 15% of its structured replies
