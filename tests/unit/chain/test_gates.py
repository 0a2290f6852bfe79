"""Quality gates: every check kind, on_fail fail/accept/revise, the judge, bad gate specs (exit 2)."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from chainfleet import Completion, CompletionRequest, Pipeline, PipelineError, Provider, Stage, arun
from chainfleet.chain.stage import revision_note
from chainfleet.pipeline.gates import parse_gate
from conftest import read_report, read_results

Outcome = list[tuple[str, bool, str | None]]


def results_of(checks: list[dict[str, Any]], output: Any, **context: Any) -> Outcome:
    return [(r.name, r.passed, r.reason) for r in (c.result(output, context) for c in parse_gate(checks))]


def test_word_counts_pass_and_fail_with_the_count_in_the_reason() -> None:
    got = results_of([{"min_words": 3}, {"max_words": 4, "name": "short"}], "one two three four five")
    assert got == [("min_words", True, None), ("short", False, "5 words, more than the 4 allowed")]
    assert results_of([{"min_words": 10}], "too short")[0][2] == "2 words, fewer than the 10 required"


def test_must_include_renders_templates_and_ignores_case() -> None:
    checks = [{"must_include": ["{{ topic }}", "honey"]}, {"must_not_include": ["lorem"]}]
    assert results_of(checks, "Urban Beekeeping makes HONEY.", topic="urban beekeeping") == [
        ("must_include", True, None),
        ("must_not_include", True, None),
    ]
    failed = results_of(checks, "Lorem ipsum about wasps", topic="urban beekeeping")
    assert failed[0] == ("must_include", False, "does not mention 'urban beekeeping', 'honey'")
    assert failed[1] == ("must_not_include", False, "mentions 'lorem'")


def test_regex_searches_each_line() -> None:
    assert results_of([{"regex": "^# "}], "intro\n# Title\n")[0][1] is True
    assert results_of([{"regex": "^# "}], "no heading")[0][2] == "does not match /^# /"


def test_when_reads_a_structured_outputs_fields_in_a_sandbox() -> None:
    checks = [{"when": "facts | length >= 3"}]
    assert results_of(checks, {"facts": ["a", "b", "c"]})[0][1] is True
    assert results_of(checks, {"facts": ["a"]})[0][2] == "'facts | length >= 3' is false"
    # no eval: an attempt to reach Python internals is refused by the sandbox, and fails the check
    escape = results_of([{"when": "output.__class__.__mro__"}], {"facts": []})[0]
    assert escape[1] is False and "could not be evaluated" in (escape[2] or "")


def no_digits(output: Any) -> str | None:
    return "contains a digit" if any(ch.isdigit() for ch in str(output)) else None


def test_check_imports_a_function_that_returns_a_reason() -> None:
    spec = [{"check": f"{__name__}:no_digits"}]
    assert results_of(spec, "no numbers here") == [("no_digits", True, None)]
    assert results_of(spec, "42 numbers") == [("no_digits", False, "contains a digit")]


def test_a_python_gate_function_still_fails_the_item() -> None:
    stage = Stage(name="w", prompt="x", gate=no_digits)
    assert [c.kind for c in stage.checks] == ["check"]


class Drafts(Provider):
    """A fake model: a draft says "fixed" only when its prompt does (a revision's feedback);
    a judge (schema with score) gives 9 to fixed drafts and 4 to the others."""

    kind = "sim"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def complete(self, request: CompletionRequest) -> Completion:
        self.prompts.append(request.prompt)
        await asyncio.sleep(0)
        if request.schema is not None:
            good = "fixed" in request.prompt.split("Text:", 1)[-1]
            answer = {"score": 9 if good else 4, "feedback": "say it is fixed"}
            return Completion(text=json.dumps(answer), input_tokens=5, output_tokens=5)
        fixed = "fixed" in request.prompt  # told by feedback, or shown a fixed earlier stage
        text = f"a fixed draft on {request.prompt[:20]}" if fixed else f"a draft on {request.prompt[:20]}"
        return Completion(text=text, input_tokens=5, output_tokens=5)


def gated(**stage: Any) -> Pipeline:
    return Pipeline(
        input="topic",
        stages=[
            Stage(name="research", prompt="Research {{ topic }}"),
            Stage(**{"name": "write", "prompt": "Write on {{ topic }}: {{ research }}", **stage}),
        ],
    )


def run(pipeline: Pipeline, out: Path, provider: Provider, topics: list[str] = ["bees"]) -> Any:  # noqa: B006
    return asyncio.run(arun(pipeline, topics, out=out, providers={"sim": provider}))


def test_a_revision_passes_at_the_second_try_with_the_judges_feedback(tmp_path: Path) -> None:
    provider = Drafts()
    judge = {"judge": {"model": "sim", "rubric": "says it is fixed", "threshold": 7}}
    report = run(gated(gate=[{"min_words": 2}, judge], on_fail="revise"), tmp_path, provider)
    assert report.exit_code == 0
    record = read_results(tmp_path)[0]
    assert record["outputs"]["write"].startswith("a fixed draft")
    write = record["gates"]["write"]
    assert write["outcome"] == "passed" and write["revisions"] == 1
    assert [t["passed"] for t in write["tries"]] == [False, True]
    assert write["tries"][0]["checks"][1]["reason"] == "score 4 below 7: say it is fixed"
    # the revision was told the feedback and shown the failed draft (the prompt has no {{ feedback }})
    revised = [p for p in provider.prompts if p.startswith("Write on") and "did not pass review" in p]
    assert len(revised) == 1 and "say it is fixed" in revised[0] and "a draft on" in revised[0]
    # calls: research, write, judge, write again, judge again
    assert report.calls["total"] == 5


def test_feedback_and_previous_are_empty_on_a_first_try_and_filled_on_a_revision(tmp_path: Path) -> None:
    provider = Drafts()
    stage = {
        "prompt": "Write on {{ topic }}. FEEDBACK:{{ feedback }} PREVIOUS:{{ previous }}",
        "gate": [{"must_include": ["fixed"]}],
        "on_fail": "revise",
    }
    report = run(gated(**stage), tmp_path, provider)
    assert report.exit_code == 0
    writes = [p for p in provider.prompts if p.startswith("Write on")]
    assert writes[0] == "Write on bees. FEEDBACK: PREVIOUS:"
    assert "FEEDBACK:- must_include: does not mention 'fixed'" in writes[1]
    assert "PREVIOUS:a draft on" in writes[1]


def test_on_fail_fail_names_the_gate_and_its_reason(tmp_path: Path) -> None:
    report = run(gated(gate=[{"must_include": ["fixed"], "name": "says-fixed"}]), tmp_path, Drafts())
    assert report.exit_code == 1
    record = read_results(tmp_path)[0]
    assert record["status"] == "failed"
    assert record["error"]["type"] == "invalid_output" and record["error"]["stage"] == "write"
    assert record["error"]["message"] == "quality gate 'says-fixed': does not mention 'fixed'"
    assert record["gates"]["write"]["outcome"] == "failed"


def test_on_fail_accept_keeps_the_output_and_flags_it(tmp_path: Path) -> None:
    report = run(gated(gate=[{"must_include": ["never"]}], on_fail="accept"), tmp_path, Drafts())
    assert report.exit_code == 0
    record = read_results(tmp_path)[0]
    assert record["status"] == "succeeded" and record["outputs"]["write"].startswith("a draft")
    assert record["gates"]["write"]["outcome"] == "accepted"
    assert record["gates"]["write"]["checks"] == {"must_include": False}


@pytest.mark.parametrize(("then", "status"), [("fail", "failed"), ("accept", "succeeded")])
def test_after_the_last_revision_the_stage_falls_back_to_then(tmp_path: Path, then: str, status: str) -> None:
    stage = {"gate": [{"must_include": ["never"]}], "on_fail": "revise", "max_revisions": 2, "then": then}
    report = run(gated(**stage), tmp_path, Drafts())
    record = read_results(tmp_path)[0]
    assert record["status"] == status
    assert record["gates"]["write"]["revisions"] == 2
    assert len(record["gates"]["write"]["tries"]) == 3
    assert report.calls["total"] == 1 + 3


def test_revise_from_an_earlier_stage_runs_it_again_with_the_feedback(tmp_path: Path) -> None:
    provider = Drafts()
    pipeline = Pipeline(
        input="topic",
        stages=[
            Stage(name="research", prompt="Research {{ topic }} FEEDBACK:{{ feedback }}"),
            Stage(
                name="write",
                prompt="Write from {{ research }}",
                gate=[{"must_include": ["fixed"]}],
                revise="research",
            ),
        ],
    )
    report = run(pipeline, tmp_path, provider)
    assert report.exit_code == 0
    research = [p for p in provider.prompts if p.startswith("Research")]
    told = "Research bees FEEDBACK:- must_include: does not mention 'fixed'"
    assert research == ["Research bees FEEDBACK:", told]
    assert read_results(tmp_path)[0]["outputs"]["write"].startswith("a fixed draft")


def test_the_report_counts_gate_pass_rates_revisions_and_failures(tmp_path: Path) -> None:
    stage = {"gate": [{"min_words": 2}, {"must_include": ["fixed"], "name": "fixed"}], "on_fail": "revise"}
    run(gated(**stage), tmp_path, Drafts(), topics=["bees", "tea"])
    gates = read_report(tmp_path)["gates"]
    write = gates["stages"]["write"]
    assert write["checks"]["fixed"] == {
        "first_try_pass_pct": 0.0,
        "final_pass_pct": 100.0,
        "items": 2,
        "items_failed": 0,
    }
    assert write["checks"]["min_words"]["first_try_pass_pct"] == 100.0
    assert write["revisions_per_item"] == 1.0 and write["outcomes"] == {"passed": 2}
    assert "| write | fixed | 0.0% | 100.0% |" in (tmp_path / "report.md").read_text(encoding="utf-8")


def test_revision_note_carries_feedback_and_previous() -> None:
    note = revision_note("- judge: too vague", "old draft")
    assert "- judge: too vague" in note and "old draft" in note


# -- bad gate settings: one line naming file:line, stage and field; exit 2 before any call --------


def load(tmp_path: Path, stage_yaml: str) -> Pipeline:
    path = tmp_path / "p.yaml"
    path.write_text(
        'input: topic\nstages:\n  - name: research\n    prompt: "Research {{ topic }}"\n'
        + textwrap.indent(textwrap.dedent(stage_yaml), "  "),
        encoding="utf-8",
    )
    return Pipeline.from_yaml(path)


BAD: Mapping[str, tuple[str, str, str]] = {
    "unknown kind": (
        """\
        - name: write
          prompt: "W {{ research }}"
          gate:
            - min_word: 300
        """,
        "p.yaml:8: stage 'write' (stages[1]), field 'gate.0.min_word'",
        "unknown check kind 'min_word' (did you mean 'min_words'?)",
    ),
    "judge model": (
        """\
        - name: write
          prompt: "W {{ research }}"
          gate:
            - judge: {model: "opnai:gpt-4o", rubric: clear}
        """,
        "p.yaml:8: stage 'write' (stages[1]), field 'gate.0.judge.model'",
        "unknown model provider 'opnai' (did you mean 'openai'?)",
    ),
    "revise later": (
        """\
        - name: write
          prompt: "W {{ research }}"
          gate: [{min_words: 3}]
          revise: edit
        - name: edit
          prompt: "E {{ write }}"
        """,
        "p.yaml:8: stage 'write' (stages[1]), field 'revise'",
        "revise: 'edit' is a later stage",
    ),
    "revise unknown": (
        """\
        - name: write
          prompt: "W {{ research }}"
          gate: [{min_words: 3}]
          revise: reserch
        """,
        "p.yaml:8: stage 'write' (stages[1]), field 'revise'",
        "'reserch' is no stage (did you mean 'research'?)",
    ),
    "negative max_revisions": (
        """\
        - name: write
          prompt: "W {{ research }}"
          max_revisions: -1
        """,
        "p.yaml:7: stage 'write' (stages[1]), field 'max_revisions'",
        "greater than or equal to 0",
    ),
    "when does not parse": (
        """\
        - name: write
          prompt: "W {{ research }}"
          gate:
            - when: "facts |"
        """,
        "p.yaml:8: stage 'write' (stages[1]), field 'gate.0.when'",
        "when: does not parse",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_gate_setting_is_one_line_naming_file_line_stage_and_field(tmp_path: Path, case: str) -> None:
    stage_yaml, where, says = BAD[case]
    with pytest.raises(PipelineError) as info:
        load(tmp_path, stage_yaml)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / where)), message
    assert says in message
