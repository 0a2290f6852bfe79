"""report.html's gates section: pass rates at the first try and after revisions, revisions per
item, repairs per stage and items failed by each gate, as the items' own records say."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from chainfleet import Pipeline, run
from conftest import read_report, read_results

SCHEMA = {
    "type": "object",
    "properties": {"facts": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 6}},
    "required": ["facts"],
}
TOPICS = [f"topic number {i}: the history of tea in place {i}" for i in range(24)]


class Tables(HTMLParser):
    """Every table's rows (cell texts) after each <h2>, by the heading's text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[list[list[str]]]] = {}
        self._h2: str | None = None
        self._in_h2 = False
        self._row: list[str] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self._in_h2, self._h2 = True, ""
        elif tag == "table" and self._h2 is not None:
            self.sections.setdefault(self._h2, []).append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._h2 is not None:
            self.sections[self._h2][-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._in_h2 and self._h2 is not None:
            self._h2 += data
        elif self._cell is not None:
            self._cell += data


def pipeline() -> Pipeline:
    return Pipeline.from_dict(
        {
            "input": "topic",
            "sim": {"latency": 0, "seed": 1, "invalid_output_rate": 0.25},
            "stages": [
                {
                    "name": "research",
                    "prompt": "Research {{ topic }}",
                    "output": SCHEMA,
                    "max_repairs": 4,
                    "gate": [{"name": "four_facts", "when": "facts | length >= 4"}],
                    "on_fail": "fail",
                },
                {
                    "name": "write",
                    "prompt": "Write on {{ topic }}:\n{{ research.facts | join('\\n') }}",
                    "gate": [
                        {"min_words": 20},
                        {"name": "editor", "judge": {"rubric": "clear", "threshold": 8}},
                    ],
                    "on_fail": "revise",
                    "max_revisions": 1,
                    "then": "accept",
                },
            ],
        }
    )


def expected(records: list[dict[str, Any]], stage: str, check: str) -> tuple[str, str, int, int]:
    """(first-try pass %, final pass %, items, items failed) of one check, from results.jsonl."""
    gated = [r["gates"][stage] for r in records if r["gates"].get(stage, {}).get("tries")]
    first = sum(next(c["passed"] for c in g["tries"][0]["checks"] if c["name"] == check) for g in gated)
    final = sum(next(c["passed"] for c in g["tries"][-1]["checks"] if c["name"] == check) for g in gated)
    failed = sum(
        g.get("outcome") == "failed"
        and not next(c["passed"] for c in g["tries"][-1]["checks"] if c["name"] == check)
        for g in gated
    )
    n = len(gated)
    return f"{100 * first / n:.1f}%", f"{100 * final / n:.1f}%", n, failed


def test_report_html_shows_each_gates_pass_rates_revisions_repairs_and_failures(tmp_path: Path) -> None:
    report = run(pipeline(), TOPICS, out=tmp_path, retry_passes=0)

    records = read_results(tmp_path)
    page = Tables()
    page.feed((tmp_path / "report.html").read_text(encoding="utf-8"))
    checks, stages = page.sections["Gates and contracts"]
    rows = {(r[0], r[1]): r[2:] for r in checks[1:]}
    for stage, check in (("research", "four_facts"), ("write", "min_words"), ("write", "editor")):
        first, final, items, failed = expected(records, stage, check)
        assert rows[(stage, check)] == [first, final, str(items), str(failed)]
    # the run really exercised every column: failures, revisions, repairs
    failed_by_research = int(rows[("research", "four_facts")][3])
    assert failed_by_research > 0 and report.items_failed >= failed_by_research
    assert rows[("write", "editor")][0] != rows[("write", "editor")][1]  # revisions raised the pass rate

    by_stage = {r[0]: r[1:] for r in stages[1:]}
    assert stages[0] == [
        "stage", "items gated", "passed", "accepted", "failed", "unfinished",
        "revisions per item", "most revisions", "repairs",
    ]  # fmt: skip
    writes = [r["gates"]["write"] for r in records if r["gates"].get("write", {}).get("tries")]
    revisions = sum(w["revisions"] for w in writes)
    outcomes = [w.get("outcome") for w in writes]
    assert by_stage["write"][:5] == [
        str(len(writes)), str(outcomes.count("passed")), str(outcomes.count("accepted")), "0",
        str(outcomes.count(None)),
    ]  # fmt: skip
    assert outcomes.count("accepted") > 0  # then: accept after the last revision
    assert by_stage["write"][5] == f"{round(revisions / len(writes), 3):g}" and revisions > 0
    repairs = sum(r["gates"]["research"]["repairs"] for r in records)
    assert repairs > 0 and by_stage["research"][-1] == str(repairs)
    assert read_report(tmp_path)["gates"]["repairs"]["research"] == repairs


def test_a_run_without_gates_has_no_gates_section(tmp_path: Path) -> None:
    plain = Pipeline.from_dict(
        {"input": "topic", "sim": {"latency": 0}, "stages": [{"name": "a", "prompt": "{{ topic }}"}]}
    )

    run(plain, ["tea"], out=tmp_path)

    page = Tables()
    page.feed((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert "Gates and contracts" not in page.sections
    assert "Stages: latency of each call" in page.sections
