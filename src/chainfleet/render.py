"""Markdown renderings: report.md for a run, one readable file per item."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .store import ItemRecord

if TYPE_CHECKING:
    from .report import RunReport

__all__ = ["item_markdown", "report_markdown"]

#: report.md shows at most this many per-item quality rows and failures
TABLE_CAP = 50


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_markdown(report: RunReport) -> str:
    from .report import fmt_seconds

    speedup, saved = report.speedup, report.time_saved_pct
    lines = [
        f"# Run {report.run_id}: {report.pipeline}",
        "",
        f"- Items: **{report.items_succeeded} of {report.items_total} succeeded**, "
        f"{report.items_failed} failed"
        + (f", {report.items_skipped} skipped" if report.items_skipped else ""),
        f"- Concurrency: {report.concurrency}",
        f"- Wall time: **{fmt_seconds(report.wall_seconds)}** (first admission to last result; "
        "start-up and report writing not counted)",
        f"- One at a time (sum of every call's service time): {fmt_seconds(report.sequential_seconds)}",
    ]
    if speedup is not None and saved is not None and saved >= 0:
        lines.append(f"- Speed-up: **{speedup:.2f}x**, time saved: **{saved:.1f}%**")
    elif speedup is not None:
        lines.append(
            f"- No time saved ({speedup:.2f}x): the run took longer than its calls one at a time "
            f"would (backoff waits: {fmt_seconds(report.backoff_seconds)})"
        )
    calls = report.calls
    lines += [
        f"- Calls: {calls.get('total', 0)} ({calls.get('succeeded', 0)} succeeded, "
        f"{calls.get('retried', 0)} retried, {calls.get('rate_limited', 0)} rate-limited, "
        f"{calls.get('failed', 0)} failed attempts); backoff waits {fmt_seconds(report.backoff_seconds)}",
        f"- Tokens: {report.tokens.get('input', 0):,} in, {report.tokens.get('output', 0):,} out; "
        f"cost: {'unknown' if report.cost_usd is None else f'${report.cost_usd:.4f}'}",
    ]
    waits = report.waits
    if any(waits.values()):
        lines.append(
            f"- Waiting: {fmt_seconds(waits.get('limiter_seconds', 0))} on the rate limiter, "
            f"{fmt_seconds(waits.get('cooldown_seconds', 0))} behind 429 cooldowns, "
            f"{fmt_seconds(waits.get('backoff_seconds', 0))} in backoff (summed over calls)"
        )
    rates = report.rates
    if rates.get("achieved_rpm") is not None:
        line = (
            f"- Achieved: {rates['achieved_rpm']:,.0f} requests/min, {rates['achieved_tpm']:,.0f} "
            f"tokens/min; {rates.get('rate_limited_pct', 0)}% of calls rate-limited (429)"
        )
        for spec, m in rates.get("models", {}).items():
            if m.get("rpm_limit") or m.get("tpm_limit"):
                how = "learned from headers" if m.get("learned") else "configured"
                line += f"; {spec} limits {m.get('rpm_limit')} rpm / {m.get('tpm_limit')} tpm ({how})"
        lines.append(line)
    if report.concurrency_mode == "auto":
        lines.append(f"- Concurrency adapted automatically: peak {report.concurrency_peak} chains")
    if report.stopped:
        lines.append(f"- **Stopped early**: {report.stopped}")
    if report.input_error:
        lines.append(f"- **Input error**: {report.input_error}")
    lines += [
        "",
        "## Stages",
        "",
        "| stage | calls | failed | p50 s | p95 s | max s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in report.stages_order:
        s = report.stages.get(name, {})
        lines.append(
            f"| {name} | {s.get('calls', 0)} | {s.get('failed', 0)} | {s.get('p50_seconds', 0):.3f} "
            f"| {s.get('p95_seconds', 0):.3f} | {s.get('max_seconds', 0):.3f} |"
        )
    lines += ["", "## Failures", ""]
    if not report.failures:
        lines.append("None.")
    else:
        lines += ["| item | stage | type | message |", "|---|---|---|---|"]
        for f in report.failures[:TABLE_CAP]:
            lines.append(f"| {_cell(f['id'])} | {f['stage']} | {f['type']} | {_cell(f['message'])} |")
        if report.items_failed > TABLE_CAP:
            lines.append(f"\n{report.items_failed - TABLE_CAP} more in results.jsonl.")
    lines += ["", "## Quality of each output", ""]
    summary = report.quality_summary()
    if not report.quality:
        lines.append("No output to assess.")
    else:
        lines += [
            f"Mean score {summary['mean_score']} / 100, mean {summary['mean_words']} words, "
            f"mean readability {summary['mean_readability']} (Flesch), topic covered in "
            f"{summary['topic_covered_pct']}% of outputs.",
            "",
            "| item | score | words | readability | grade | topic covered | headings | paragraphs |",
            "|---|---:|---:|---:|---:|---|---:|---:|",
        ]
        for q in report.quality[:TABLE_CAP]:
            lines.append(
                f"| {_cell(q['id'])} | {q['score']} | {q['words']} | {q['readability']} | "
                f"{q['grade']} | {'yes' if q['topic_covered'] else 'no'} "
                f"({q['topic_coverage']:.0%}) | {q['headings']} | {q['paragraphs']} |"
            )
        if summary["items"] > TABLE_CAP:
            lines.append(f"\n{summary['items'] - TABLE_CAP} more in results.jsonl.")
    return "\n".join(lines) + "\n"


def item_markdown(record: ItemRecord, report: RunReport, topic: str | None) -> str:
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
    order = report.stages_order
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
            lines.append(record.outputs[name].rstrip())
    return "\n".join(lines) + "\n"
