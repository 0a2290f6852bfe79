"""``chainfleet demo``: the classic three-topic exercise, sequential against parallel."""

from __future__ import annotations

import asyncio
import sys

import click

from ..demo import run_demo
from ..report import fmt_seconds
from . import EXIT_FAILED, EXIT_OK, cli, config_errors


@cli.command("demo", short_help="The classic 3-topic exercise: one at a time vs in parallel.")
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    metavar="N",
    default=2,
    show_default=True,
    help="Chains in flight in the parallel run.",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    default=1.0,
    show_default=True,
    help="Seconds per simulated call.",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    metavar="SHARE",
    default=0.0,
    show_default=True,
    help="Share of simulated calls that fail with a transient 500 (retried).",
)
@click.option(
    "--out",
    "-o",
    default="chainfleet-demo",
    show_default=True,
    metavar="DIR",
    help="Where the two runs and report.json are written.",
)
@config_errors
def demo_command(concurrency: int, latency: float, error_rate: float, out: str) -> None:
    """Three topics through Research -> Write -> Edit on the simulated model: once one at a
    time, once in parallel. Prints both times, failures, each output's quality, whether the
    outputs are identical, and the time saved.

    \b
    Examples:
      chainfleet demo
      chainfleet demo --concurrency 3 --latency 0.2
      chainfleet demo --error-rate 0.2
    """
    click.echo(
        f"Running 3 topics x 3 agents (research -> write -> edit) on the simulated model, "
        f"{latency:g} s a call."
    )
    demo = asyncio.run(run_demo(out, concurrency=concurrency, latency=latency, error_rate=error_rate))
    seq, par = demo.sequential, demo.parallel
    rows = [("one at a time", seq), (f"parallel, concurrency {concurrency}", par)]
    click.echo("")
    click.echo(f"{'mode':<26} {'total time':>11} {'succeeded':>10} {'failed':>7} {'retried calls':>14}")
    for label, r in rows:
        click.echo(
            f"{label:<26} {fmt_seconds(r.wall_seconds):>11} {r.items_succeeded:>6}/{r.items_total:<3} "
            f"{r.items_failed:>7} {r.calls.get('retried', 0):>14}"
        )
    click.echo("")
    click.echo("Quality of each output (parallel run):")
    click.echo(f"  {'topic':<50} {'score':>5} {'words':>6} {'readability':>11} {'topic covered':>14}")
    topics = {rec.id: rec.input.get("topic", rec.id) for rec in par.results()}
    for q in par.quality:
        click.echo(
            f"  {str(topics.get(q['id'], q['id']))[:50]:<50} {q['score']:>5} {q['words']:>6} "
            f"{q['readability']:>11} {'yes' if q['topic_covered'] else 'no':>14}"
        )
    for f in par.failures + seq.failures:
        click.echo(f"  item {f['id']} failed at {f['stage']}: {f['type']}: {f['message']}")
    click.echo("")
    click.echo(f"Outputs identical between the two modes: {'yes' if demo.outputs_identical else 'NO'}")
    saved = demo.to_dict()["time_saved_pct"]  # the figure report.json holds
    if saved is not None:
        click.echo(
            f"Time saved by running in parallel: {saved:.0f}% "
            f"({fmt_seconds(seq.wall_seconds)} -> {fmt_seconds(par.wall_seconds)})"
        )
    click.echo(f"Reports: {out}/report.json, {out}/sequential/, {out}/parallel/")
    ok = seq.exit_code == 0 and par.exit_code == 0
    sys.exit(EXIT_OK if ok else EXIT_FAILED)
