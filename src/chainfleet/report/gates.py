"""The gates' numbers for the report, read from the run store alone.

Per gated stage: each check's pass rate at the first try and after revisions, how many items it
failed, the revisions per item and the stage's outcomes (passed, accepted, failed); per
contracted stage, the repairs; and the judge calls. ``report.json`` holds them under ``gates``,
report.md renders them with :func:`gate_markdown`; :func:`gate_tables` gives report.html's
template the rows of its tables.

Example::

    summary = gate_summary(store, run_id)   # None when the pipeline has no gate or contract
    summary["stages"]["write"]["checks"]["judge"]["first_try_pass_pct"]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from chainfleet.store.runstore import RevisionRow, RunStore

__all__ = ["gate_line", "gate_markdown", "gate_outcomes", "gate_summary", "gate_tables"]


def _tries(rows: Iterable[RevisionRow]) -> Iterable[tuple[str, str, list[RevisionRow]]]:
    """(item id, stage, its tries in order) from rows sorted by item, stage and revision."""
    group: list[RevisionRow] = []
    for row in rows:
        if group and (row.index, row.stage) != (group[0].index, group[0].stage):
            yield group[0].item_id, group[0].stage, group
            group = []
        group.append(row)
    if group:
        yield group[0].item_id, group[0].stage, group


class _StageTally:
    def __init__(self) -> None:
        self.items = 0
        self.revisions = 0
        self.max_revisions = 0
        self.repairs = 0
        self.outcomes: Counter[str] = Counter()
        self.first: Counter[str] = Counter()
        self.final: Counter[str] = Counter()
        self.seen: Counter[str] = Counter()
        self.failed_items: Counter[str] = Counter()
        self.names: list[str] = []

    def add(self, tries: list[RevisionRow]) -> None:
        self.repairs += sum(t.repairs for t in tries)
        judged = [t for t in tries if t.gates is not None]
        if not judged:
            return
        self.items += 1
        revisions = tries[-1].revision  # a revision made counts, even if its judge never answered
        self.revisions += revisions
        self.max_revisions = max(self.max_revisions, revisions)
        outcome = next((t.outcome for t in reversed(tries) if t.outcome), None) or "unfinished"
        self.outcomes[outcome] += 1
        first, last = judged[0].gates or [], judged[-1].gates or []
        for check in last:
            name = check["name"]
            if name not in self.names:
                self.names.append(name)
            self.seen[name] += 1
            self.final[name] += bool(check.get("passed"))
            if outcome == "failed" and not check.get("passed"):
                self.failed_items[name] += 1
        for check in first:
            self.first[check["name"]] += bool(check.get("passed"))

    def to_dict(self) -> dict[str, Any]:
        def pct(n: int, of: int) -> float:
            return round(100.0 * n / of, 1) if of else 0.0

        return {
            "items": self.items,
            "outcomes": dict(self.outcomes),
            "revisions_per_item": round(self.revisions / self.items, 3) if self.items else 0.0,
            "revisions_max": self.max_revisions,
            "repairs": self.repairs,
            "checks": {
                name: {
                    "first_try_pass_pct": pct(self.first[name], self.seen[name]),
                    "final_pass_pct": pct(self.final[name], self.seen[name]),
                    "items": self.seen[name],
                    "items_failed": self.failed_items[name],
                }
                for name in self.names
            },
        }


def gate_summary(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """The ``gates`` block of report.json, or None when no stage has a gate or a contract."""
    tallies: dict[str, _StageTally] = {}
    for _, stage, tries in _tries(store.revisions(run_id)):
        tallies.setdefault(stage, _StageTally()).add(tries)
    if not tallies:
        return None
    counts = store.call_counts(run_id)
    return {
        "stages": {name: t.to_dict() for name, t in tallies.items() if t.items},
        "repairs": {name: t.repairs for name, t in tallies.items()},
        "judge_calls": sum(n for stage, n in counts.items() if stage.endswith(":judge")),
    }


#: per (item id, stage): outcome, revisions, each try passed or not
Outcomes = dict[tuple[str, str], tuple[str | None, int, tuple[bool, ...]]]


def gate_outcomes(store: RunStore, run_id: str) -> Outcomes:
    """Per (item id, stage): its outcome, its revisions and each try's pass or fail, to compare
    two runs ("gate outcomes identical")."""
    found: Outcomes = {}
    for item_id, stage, tries in _tries(store.revisions(run_id)):
        judged = [t for t in tries if t.gates is not None]
        if not judged:
            continue
        outcome = next((t.outcome for t in reversed(tries) if t.outcome), None)
        passes = tuple(all(g.get("passed") for g in t.gates or []) for t in judged)
        found[(item_id, stage)] = (outcome, judged[-1].revision, passes)
    return found


def gate_line(gates: Mapping[str, Any] | None) -> str | None:
    """The terminal summary's line for the gates: the calls they added, then per stage, e.g.
    ``gates: 1 revision, 2 repairs, 11 judge calls (research: 2 repairs; write: 1 revision)``;
    None for a run without gates or contracts."""
    if not gates:
        return None
    stages = gates.get("stages") or {}
    repairs = gates.get("repairs") or {}
    per: list[str] = []
    total_revisions = total_repairs = 0
    for name in dict.fromkeys([*stages, *repairs]):
        stage = stages.get(name) or {}
        revised = round((stage.get("revisions_per_item") or 0) * (stage.get("items") or 0))
        repaired = int(repairs.get(name, stage.get("repairs", 0)) or 0)
        total_revisions, total_repairs = total_revisions + revised, total_repairs + repaired
        said = [_count(revised, "revision")] * bool(revised) + [_count(repaired, "repair")] * bool(repaired)
        if said:
            per.append(f"{name}: {', '.join(said)}")
    judged = int(gates.get("judge_calls") or 0)
    line = f"gates: {_count(total_revisions, 'revision')}, {_count(total_repairs, 'repair')}, "
    line += f"{_count(judged, 'judge call')}"
    return line + (f" ({'; '.join(per)})" if per else "")


def _count(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def gate_markdown(gates: Mapping[str, Any] | None) -> list[str]:
    """The report.md section on gates and contracts (no lines when there are none)."""
    if not gates:
        return []
    lines = [
        "",
        "## Gates",
        "",
        "| stage | check | pass at first try | pass after revisions | items failed by it |",
        "|---|---|---:|---:|---:|",
    ]
    for stage, s in gates.get("stages", {}).items():
        for name, c in s.get("checks", {}).items():
            lines.append(
                f"| {stage} | {name} | {c['first_try_pass_pct']:.1f}% | {c['final_pass_pct']:.1f}% "
                f"| {c['items_failed']} |"
            )
    lines.append("")
    for stage, s in gates.get("stages", {}).items():
        outcomes = ", ".join(f"{n} {k}" for k, n in sorted(s.get("outcomes", {}).items()))
        lines.append(
            f"- {stage}: {s['items']} items gated ({outcomes}); {s['revisions_per_item']:g} revisions "
            f"per item (at most {s['revisions_max']})"
        )
    repairs = ", ".join(f"{stage} {n}" for stage, n in gates.get("repairs", {}).items())
    lines.append(f"- Repairs (replies that broke the contract, asked again): {repairs or 'none'}")
    lines.append(f"- Judge calls: {gates.get('judge_calls', 0)}")
    return lines


def gate_tables(gates: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """report.html's section on gates and contracts, as data for its template (None when there
    are none): per check the pass rate at the first try and after revisions and the items it
    failed; per stage the outcomes, revisions per item and repairs; the judge calls."""
    if not gates:
        return None
    stages = gates.get("stages", {})
    checks = [
        [stage, name, _pct(c["first_try_pass_pct"]), _pct(c["final_pass_pct"]), c["items"], c["items_failed"]]
        for stage, st in stages.items()
        for name, c in st.get("checks", {}).items()
    ]
    rows = []
    repairs = gates.get("repairs", {})
    for stage in list(stages) + [s for s in repairs if s not in stages]:
        st = stages.get(stage, {})
        outcomes = st.get("outcomes", {})
        gated = bool(st)
        rows.append(
            [
                stage,
                st.get("items", "-") if gated else "-",
                *(
                    (outcomes.get(k, 0) if gated else "-")
                    for k in ("passed", "accepted", "failed", "unfinished")
                ),
                f"{st['revisions_per_item']:g}" if gated else "-",
                st.get("revisions_max", "-") if gated else "-",
                repairs.get(stage, st.get("repairs", 0)),
            ]
        )
    return {"checks": checks, "stages": rows, "judge_calls": int(gates.get("judge_calls", 0))}


def _pct(value: float) -> str:
    return f"{value:.1f}%"
