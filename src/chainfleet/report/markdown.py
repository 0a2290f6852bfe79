"""Markdown renderings: report.md for a run, one readable file per item.

Both render plain data: report.md from the report dict (report.json's content, as
``RunReport.to_dict()`` gives it), an item's file from its stored record. Nothing here knows
:class:`~chainfleet.report.model.RunReport`, so the model can call down into this module
(``RunReport.to_markdown()``) without this module importing it back; report.html shows the same
:func:`headline` lines, so the two never disagree.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from chainfleet.limits.facts import limit_lines
from chainfleet.report.agents import agent_markdown
from chainfleet.report.batch import batch_markdown
from chainfleet.report.duration import fmt_duration
from chainfleet.report.estimate import range_phrase
from chainfleet.report.gates import gate_markdown
from chainfleet.report.review import review_lines
from chainfleet.report.routes import routes_markdown
from chainfleet.store.runstore import ItemRecord

__all__ = ["headline", "item_markdown", "rates_lines", "report_markdown", "time_split"]

#: report.md shows at most this many per-item quality rows and failures
TABLE_CAP = 50


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def headline(d: Mapping[str, Any]) -> list[str]:
    """The lines a person reads first, from a report dict (``report.json``), in markdown.

    report.md shows them as its first list; report.html shows the same lines (``**`` made bold),
    so the two never disagree. Items, wall time against one at a time, the time saved, the cost,
    what failed and why the run stopped.
    """
    items = d.get("items", {})
    lines = [
        f"**Items: {items.get('succeeded', 0)} of {items.get('total', 0)} succeeded**, "
        f"{items.get('failed', 0)} failed"
        + (f", {items['skipped']} skipped (never run)" if items.get("skipped") else "")
    ]
    wall, sequential = d.get("wall_seconds", 0.0), d.get("sequential_seconds", 0.0)
    chains = d.get("concurrency")
    if d.get("concurrency_mode") == "auto":
        peak = (d.get("sequential_estimate") or {}).get("peak_in_flight") or d.get("concurrency_peak")
        how = f"up to {chains} chains in flight (adapting; peak {peak} in flight)"
    elif chains == 1:
        how = "one chain at a time"
    else:
        how = f"up to {chains} chains in flight"
    one = chains == 1 and d.get("concurrency_mode") != "auto"
    uncertain = range_phrase(d.get("sequential_estimate"), wall)
    if d.get("batch"):  # its calls waited for the provider's batches: online is the comparison
        lines.append(
            f"Wall time: **{fmt_duration(wall)}** in batch mode; "
            "`chainfleet plan --batch` compares it with online"
        )
    elif one:  # it is the one-at-a-time run: nothing to compare it with
        lines.append(f"Wall time: **{fmt_duration(wall)}** with {how}: it ran one at a time")
    else:
        lines.append(
            f"Wall time: **{fmt_duration(wall)}** with {how}; "
            f"one at a time would take {'about ' if uncertain else ''}{fmt_duration(sequential)}"
            + (f" ({d['sequential_estimate']['note']})" if d.get("sequential_estimate") else "")
        )
    speedup, saved = d.get("speedup"), d.get("time_saved_pct")
    if one:
        pass
    elif uncertain and speedup is not None:
        lines.append(f"Speed-up: **about {speedup:.2f}x**, {uncertain}")
    elif speedup is not None and saved is not None and saved >= 0:
        lines.append(f"Speed-up: **{speedup:.2f}x**, time saved: **{saved:.1f}%**")
    elif speedup is not None:
        lines.append(f"**{speedup:.2f}x: slower than one at a time**: {_slowest_wait(d)}")
    tokens = d.get("tokens", {})
    cost = d.get("cost_usd")
    lines.append(
        ("Cost: unknown (no prices for these models)" if cost is None else f"Cost: **${cost:.4f}**")
        + f"; tokens: {tokens.get('input', 0):,} in, {tokens.get('output', 0):,} out"
    )
    calls = d.get("calls", {})
    if calls.get("retried"):
        lines.append(
            f"Retries: {calls['retried']:,} calls retried ({calls.get('rate_limited', 0):,} rate-limited), "
            f"{fmt_duration(d.get('backoff_seconds', 0.0))} of backoff"
        )
    if items.get("failed"):
        lines.append(f"Failed: {items['failed']} item{'' if items['failed'] == 1 else 's'}: {_why(d)}")
    lines += review_lines(d)
    if d.get("stopped"):
        lines.append(f"**Stopped early**: {d['stopped']}")
    if d.get("input_error"):
        lines.append(f"**Input error**: {d['input_error']}")
    return lines


def _slowest_wait(d: Mapping[str, Any]) -> str:
    """Why the run took longer than its calls one at a time: the largest of its waits."""
    label, seconds = max(time_split(d)[1:], key=lambda pair: pair[1])
    if seconds <= 0:
        return "the run took longer than its calls one at a time would"
    return (
        f"the run took longer than its calls one at a time would; the calls spent "
        f"{fmt_duration(seconds)} {label} (summed over calls)"
    )


def _why(d: Mapping[str, Any]) -> str:
    """The failures grouped by where and how: ``2 at research (server_error), 1 at edit (...)``."""
    groups: Counter[tuple[str, str]] = Counter(
        (str(f.get("stage")), str(f.get("type"))) for f in d.get("failures", [])
    )
    parts = [f"{n} at {stage} ({kind})" for (stage, kind), n in groups.most_common(4)]
    if len(groups) > 4:
        parts.append("...")
    return ", ".join(parts) or "see results.jsonl"


def time_split(d: Mapping[str, Any]) -> list[tuple[str, float]]:
    """Where the calls' time went, summed over every call: service, limiter, cooldown, backoff."""
    waits = d.get("waits", {})
    return [
        ("calling models (service time)", float(d.get("sequential_seconds", 0.0))),
        ("waiting for the rate limiter", float(waits.get("limiter_seconds", 0.0))),
        ("waiting out 429 cooldowns", float(waits.get("cooldown_seconds", 0.0))),
        ("backoff before retries", float(waits.get("backoff_seconds", d.get("backoff_seconds", 0.0)))),
    ]


TIME_SPLIT_NOTE = (
    "Summed over every call. Chains run side by side, so these add up to more than the wall time; "
    "time waiting is time a chain held its place in flight without calling."
)


def report_markdown(d: Mapping[str, Any]) -> str:
    """report.md from a report dict (``RunReport.to_dict()``, i.e. report.json): the numbers are
    rounded as there, so report.md rendered again from the store (`chainfleet report`) is the
    same file."""
    lines = [f"# Run {d['run_id']}: {d['pipeline']}", ""]
    lines += [f"- {line}" for line in headline(d)]
    lines += _time_table(d)
    lines += ["", "## Details", ""]
    lines += _details(d)
    lines += _stage_table(d)
    lines += _failure_table(d)
    lines += gate_markdown(d.get("gates"))
    lines += batch_markdown(d.get("batch"))
    lines += agent_markdown(d.get("agents"))
    lines += routes_markdown(d.get("routes"))
    lines += _quality_table(d["quality"])
    return "\n".join(lines) + "\n"


def _time_table(d: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Where the time went", "", "| | seconds | share |", "|---|---:|---:|"]
    split = time_split(d)
    total = sum(seconds for _, seconds in split)
    for label, seconds in split:
        share = f"{100 * seconds / total:.1f}%" if total > 0 else "-"
        lines.append(f"| {label} | {seconds:.2f} | {share} |")
    return lines + ["", TIME_SPLIT_NOTE]


def _details(d: Mapping[str, Any]) -> list[str]:
    calls = d["calls"]
    auto = d["concurrency_mode"] == "auto"
    lines = [
        f"- Wall time {fmt_duration(d['wall_seconds'])}: first admission to last result; start-up "
        "and report writing not counted. One at a time: every call's service time, with a server's "
        "queueing taken out and never less than the rate limits allow.",
        f"- Concurrency: {d['concurrency']}"
        + (f" (adapted automatically: peak {d['concurrency_peak']} chains)" if auto else ""),
        f"- Calls: {calls.get('total', 0)} ({calls.get('succeeded', 0)} succeeded, "
        f"{calls.get('retried', 0)} retried, {calls.get('rate_limited', 0)} rate-limited, "
        f"{calls.get('failed', 0)} failed for good, "
        f"{calls.get('failed_attempts', calls.get('failed', 0))} failed attempts); "
        f"backoff waits {fmt_duration(d['backoff_seconds'])}",
    ]
    lines += rates_lines(d["rates"])
    if d["reused_stage_results"] or d["cache_hits"]:
        lines.append(
            f"- Reused: {d['reused_stage_results']} stage results from the run store (resume), "
            f"{d['cache_hits']} from the response cache"
        )
    if d.get("replayed_calls"):
        lines.append(
            f"- Replayed: {d['replayed_calls']} calls answered from the run's journal (the chain "
            "ran again: retry pass, resume, review); not sent, not paid"
        )
    for path, count in sorted((d.get("unlimited_paths") or {}).items()):
        lines.append(
            f"- **Warning**: {count} call{'' if count == 1 else 's'} to `{path}`, an API chainfleet "
            "cannot read, went through without rate limits or token counts"
        )
    return lines


def _stage_table(d: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        "## Stages",
        "",
        "| stage | calls | failed | p50 s | p95 s | max s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    stages = d["stages"]
    names = [n for n in d["stages_order"] if n in stages] + [n for n in stages if n not in d["stages_order"]]
    for name in names:
        s = stages.get(name, {})
        lines.append(
            f"| {name} | {s.get('calls', 0)} | {s.get('failed', 0)} | {s.get('p50_seconds', 0):.3f} "
            f"| {s.get('p95_seconds', 0):.3f} | {s.get('max_seconds', 0):.3f} |"
        )
    return lines


def _failure_table(d: Mapping[str, Any]) -> list[str]:
    lines = ["", "## Failures", ""]
    failures, failed = d["failures"], d["items"]["failed"]
    if not failures:
        return lines + ["None."]
    lines += ["| item | stage | type | message |", "|---|---|---|---|"]
    for f in failures[:TABLE_CAP]:
        lines.append(f"| {_cell(f['id'])} | {f['stage']} | {f['type']} | {_cell(f['message'])} |")
    if failed > TABLE_CAP:
        lines.append(f"\n{failed - TABLE_CAP} more in results.jsonl.")
    return lines


def _quality_table(quality: Mapping[str, Any]) -> list[str]:
    """Mean quality, then a row per output (``quality`` is report.json's)."""
    lines = ["", "## Quality of each output", ""]
    rows = quality["per_item"]
    if not rows:
        return lines + ["No output to assess."]
    lines += [
        f"Mean score {quality['mean_score']} / 100, mean {quality['mean_words']} words, "
        f"mean readability {quality['mean_readability']} (Flesch), topic covered in "
        f"{quality['topic_covered_pct']}% of outputs.",
        "",
        "| item | score | words | readability | grade | topic covered | headings | paragraphs |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for q in rows[:TABLE_CAP]:
        lines.append(
            f"| {_cell(q['id'])} | {q['score']} | {q['words']} | {q['readability']} | "
            f"{q['grade']} | {'yes' if q['topic_covered'] else 'no'} "
            f"({q['topic_coverage']:.0%}) | {q['headings']} | {q['paragraphs']} |"
        )
    if quality["items"] > TABLE_CAP:
        lines.append(f"\n{quality['items'] - TABLE_CAP} more in results.jsonl.")
    return lines


def rates_lines(rates: Mapping[str, Any]) -> list[str]:
    """Achieved requests and tokens per minute against each model's limits, as list items."""
    if rates.get("achieved_rpm") is None:
        return []
    attempts = ""
    if rates.get("attempts_rpm") is not None:
        refused = rates.get("rate_limited", 0)
        attempts = f" (attempts: {rates['attempts_rpm']:,.0f}/min, {refused:,} of them 429s)"
    over = {"calls sent": " (from the first call sent to the last)", "wall time": " (over the wall time)"}
    lines = [
        f"- Achieved: {rates['achieved_rpm']:,.0f} successful requests/min{attempts}, "
        f"{rates['achieved_tpm']:,.0f} tokens/min{over.get(rates.get('rates_over', ''), '')}; "
        f"{rates.get('rate_limited_pct', 0)}% of attempts rate-limited (429)"
    ]
    for spec, m in rates.get("models", {}).items():
        if m.get("rpm_limit") or m.get("tpm_limit"):
            how = "learned from headers" if m.get("learned") else "configured"
            lines.append(
                f"- {spec}: limits {_limit(m.get('rpm_limit'))} requests/min, "
                f"{_limit(m.get('tpm_limit'))} tokens/min ({how}); {m.get('cooldowns', 0)} cooldowns"
            )
    lines += [f"- {line}" for line in limit_lines(rates.get("models") or {})]
    return lines


def _limit(value: float | None) -> str:
    return "none" if value is None else f"{value:,.0f}"


def item_markdown(record: ItemRecord, stages_order: Sequence[str], topic: str | None) -> str:
    """One item's file: status and quality first, then the final output, then earlier stages."""
    title = topic or f"Item {record.id}"
    lines = [f"# {title}", "", f"- id: `{record.id}`", f"- status: **{record.status}**"]
    lines.append(f"- calls: {record.attempts}, service time: {record.seconds:.2f} s")
    if record.error:
        lines.append(
            f"- error at stage `{record.error.get('stage')}`: {record.error.get('type')}: "
            f"{record.error.get('message')}"
        )
    if record.quality:
        q = record.quality
        lines.append(
            f"- quality: score {q['score']}/100, {q['words']} words, readability "
            f"{q['readability']}, topic covered: {'yes' if q['topic_covered'] else 'no'}"
        )
    order = stages_order
    for name in reversed(order):
        if name in record.outputs:
            label = "Output" if name == order[-1] else f"Stage `{name}`"
            lines += [
                "",
                "---",
                "",
                f"## {label}" + (f" (`{name}`)" if name == order[-1] else ""),
                "",
            ]
            output = record.outputs[name]
            if isinstance(output, str):
                lines.append(output.rstrip())
            else:  # a structured output
                lines += ["```json", json.dumps(output, indent=2, ensure_ascii=False), "```"]
    return "\n".join(lines) + "\n"
