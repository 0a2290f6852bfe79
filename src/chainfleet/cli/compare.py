"""``chainfleet compare``: one input twice, one item at a time and then N in flight."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from chainfleet.cli.group import cli, config_errors
from chainfleet.cli.options import input_option
from chainfleet.cli.progress import Progress
from chainfleet.errors import ConfigError
from chainfleet.report.duration import fmt_duration
from chainfleet.runner.api import load_pipeline
from chainfleet.runner.compare import CompareReport, Display, run_compare
from chainfleet.runner.core import new_run_id

#: per-item quality rows printed; report.json holds the rest
SHOWN_ITEMS = 20


@cli.command("compare", short_help="Run an input one at a time, then in parallel, and compare.")
@click.argument("pipeline_file", metavar="PIPELINE.yaml", type=click.Path(dir_okay=False))
@input_option
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=2),
    metavar="N",
    help="Chains in flight in the parallel run [default: the pipeline's, else 5].",
)
@click.option("--out", "-o", metavar="DIR", help="Output folder [default: runs/compare-<run id>].")
@click.option("--model", metavar="MODEL", help="Use this model for every LLM stage, e.g. sim.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display; only the comparison.")
@config_errors
def compare_command(
    pipeline_file: str,
    input_file: str,
    concurrency: int | None,
    out: str | None,
    model: str | None,
    quiet: bool,
) -> None:
    """Run PIPELINE.yaml over --input twice, one item at a time and then N in flight, and
    compare: both total times, failures, the time saved, whether the outputs are identical,
    and each output's quality in both runs with the mean difference.

    \b
    Examples:
      chainfleet compare examples/content.yaml --input examples/topics.txt -c 5
      chainfleet compare examples/content.yaml -i rows.csv -c 20 --out runs/compare
      chainfleet compare examples/content.yaml -i topics.txt -c 10 --model openai:gpt-4o-mini

    The response cache is off, so both runs call the model (and both are paid for). A
    sampling model writes different texts each run: then the quality scores, not identical
    outputs, tell whether parallelism changed the results. Writes sequential/, parallel/ and
    report.json into the output folder. Exit code 0 when both runs succeeded fully, 1 when
    items failed, 2 for bad usage or input.
    """
    pipeline = load_pipeline(pipeline_file, input_file)  # a YAML file, or the user's own chain (file.py:fn)
    n = concurrency or pipeline.concurrency
    if n < 2:
        raise ConfigError("a comparison needs a parallel run: give -c N with N of at least 2")
    out_dir = Path(out) if out else Path("runs") / f"compare-{new_run_id()}"
    click.echo(f"Running {pipeline.name} over {input_file}: one item at a time, then {n} in flight.")
    report = asyncio.run(
        run_compare(
            pipeline,
            input_file,
            concurrency=n,
            out=out_dir,
            model=model,
            progress=None if quiet else display,
        )
    )
    print_comparison(report, out_dir)
    sys.exit(report.exit_code)


def display(label: str) -> Display:
    """The progress display of one of the two runs (live on a terminal, else plain lines)."""
    return Progress(label=label)


def print_comparison(report: CompareReport, out: str | Path) -> None:
    """The comparison as ``compare`` and ``demo`` print it."""
    seq, par = report.sequential, report.parallel
    rows = [("one at a time", seq), (f"parallel, concurrency {report.concurrency}", par)]
    click.echo("")
    click.echo(f"{'mode':<26} {'total time':>11} {'succeeded':>10} {'failed':>7} {'retried calls':>14}")
    for label, r in rows:
        click.echo(
            f"{label:<26} {fmt_duration(r.wall_seconds):>11} {r.items_succeeded:>6}/{r.items_total:<3} "
            f"{r.items_failed:>7} {r.calls.get('retried', 0):>14}"
        )
    click.echo("")
    print_quality(report)
    for mode, r in (("one at a time", seq), ("parallel", par)):
        for f in r.failures[:10]:
            click.echo(f"  {mode}: item {f['id']} failed at {f['stage']}: {f['type']}: {f['message']}")
        if r.items_failed > 10:
            click.echo(f"  {mode}: ... and {r.items_failed - 10} more failed (see results.jsonl)")
    click.echo("")
    same = "yes" if report.outputs_identical else f"NO ({report.outputs_differing} differ)"
    click.echo(f"Outputs identical between the two modes: {same}")
    print_gates(report)
    print_trajectories(report)
    if report.review_queue_identical is not None:
        queue = "yes" if report.review_queue_identical else f"NO ({report.review_differing} differ)"
        click.echo(
            f"Review queue identical between the two modes: {queue}; {report.review_queued} items wait "
            f"for a person: chainfleet review {out}/parallel"
        )
    saved = report.to_dict()["time_saved_pct"]  # the figure report.json holds
    if saved is not None:
        click.echo(
            f"Time saved by running in parallel: {saved:.0f}% "
            f"({fmt_duration(seq.wall_seconds)} -> {fmt_duration(par.wall_seconds)})"
        )
    error = report.estimate_error_pct
    if error is not None:
        click.echo(
            f"The parallel run alone estimated one at a time at {fmt_duration(par.sequential_seconds)} "
            f"({round(error) or 0:+d}% against the measured run)"  # never "-0%"
        )
    click.echo(f"Reports: {out}/report.json, {out}/sequential/, {out}/parallel/")


def print_trajectories(report: CompareReport) -> None:
    """Whether every agent took the same steps (tool calls, arguments, results) in both runs."""
    if report.trajectories_identical is None:
        return
    same = "yes" if report.trajectories_identical else f"NO ({report.trajectories_differing} differ)"
    click.echo(
        f"Agent trajectories identical between the two modes: {same} ({report.trajectories} items)"
    )


def print_gates(report: CompareReport) -> None:
    """Whether the gates decided alike in both runs, and each gated stage's figures side by side."""
    if report.gate_outcomes_identical is None:
        return
    same = "yes" if report.gate_outcomes_identical else f"NO ({report.gates_differing} differ)"
    click.echo(f"Gate outcomes identical between the two modes: {same} ({report.gated} gated)")
    for stage, sides in report.gate_sides().items():
        parts = []
        for mode, label in (("sequential", "one at a time"), ("parallel", "parallel")):
            side = sides.get(mode)
            if side is None:
                continue
            outcomes = ", ".join(f"{n} {k}" for k, n in sorted(side["outcomes"].items()))
            parts.append(f"{label}: {outcomes}, {side['revisions_per_item']:g} revisions/item")
        click.echo(f"  {stage}: " + "; ".join(parts))


def print_quality(report: CompareReport) -> None:
    """Each item's quality score in both runs, side by side, then the means."""
    click.echo("Quality of each output (score 0-100 in both runs; words, readability, topic: parallel run):")
    name = report.sequential.input_field[:50]
    click.echo(
        f"  {name:<50} {'sequential':>10} {'parallel':>8} {'diff':>6} {'words':>6} "
        f"{'readability':>11} {'on topic':>8}"
    )
    for row in report.quality[:SHOWN_ITEMS]:
        seq, par = row["sequential"], row["parallel"]
        item = str(row["topic"] if row["topic"] is not None else row["id"])[:50]
        words, readability, covered = "-", "-", "-"
        if par is not None:
            words, readability = par["words"], par["readability"]
            covered = "yes" if par["topic_covered"] else "no"
        waits = row.get("needs_review", False)
        diff = _signed(row["score_difference"])
        click.echo(
            f"  {item:<50} {_score(seq, waits):>10} {_score(par, waits):>8} {diff:>6} "
            f"{words:>6} {readability:>11} {covered:>8}"
        )
    if report.items > SHOWN_ITEMS:
        click.echo(f"  ... and {report.items - SHOWN_ITEMS:,} more items (see report.json)")
    if report.quality_items:
        click.echo(
            f"  {f'mean over {report.quality_items} items':<50} "
            f"{report.mean_score_sequential:>10.1f} {report.mean_score_parallel:>8.1f} "
            f"{_signed(report.mean_score_difference):>6}"
        )


def _score(quality: dict[str, object] | None, waits: bool = False) -> str:
    if quality is None:
        return "review" if waits else "failed"
    return f"{quality['score']}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"
