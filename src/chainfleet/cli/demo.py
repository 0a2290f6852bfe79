"""``chainfleet demo``: the classic three-topic exercise, sequential against parallel."""

from __future__ import annotations

import asyncio
import sys

import click

from chainfleet.cli.compare import display, print_comparison
from chainfleet.cli.group import cli, config_errors
from chainfleet.runner.demo import DEMO_TOPICS, run_demo


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
@click.option("--quiet", "-q", is_flag=True, help="No progress display while the runs go.")
@click.option("--review", is_flag=True, help="Leave the edited articles waiting for a person to review.")
@config_errors
def demo_command(
    concurrency: int, latency: float, error_rate: float, out: str, quiet: bool, review: bool
) -> None:
    """Three topics through Research -> Write -> Edit on the simulated model: once one at a
    time, once in parallel. Research hands Write a JSON contract; each draft must pass a gate
    (a word count and a judge) or is revised with the judge's feedback. Shows each run's
    progress, then prints both times, failures, each output's quality in both runs, whether
    the outputs and the gate outcomes are identical, and the time saved.

    \b
    Examples:
      chainfleet demo
      chainfleet demo --concurrency 3 --latency 0.2
      chainfleet demo --error-rate 0.2
      chainfleet demo --review             then: chainfleet review chainfleet-demo/parallel
    """
    click.echo(
        f"Running {len(DEMO_TOPICS)} topics through research -> write (gated: a judge scores each "
        f"draft, a weak one is revised) -> edit on the simulated model, {latency:g} s a call."
    )
    demo = asyncio.run(
        run_demo(
            out,
            concurrency=concurrency,
            latency=latency,
            error_rate=error_rate,
            progress=None if quiet else display,
            review=review,
        )
    )
    print_comparison(demo, out)
    if review:
        click.echo(f"Then: chainfleet resume {out}/parallel finishes the approved chains.")
        sys.exit(0)  # items waiting is what --review is for
    sys.exit(demo.exit_code)
