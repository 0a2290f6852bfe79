"""``chainfleet run``: one pipeline over one input file."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigError
from ..pipeline import Pipeline
from ..report import RunReport
from ..runner import arun, new_run_id
from . import cli, config_errors
from .progress import ProgressPrinter

if TYPE_CHECKING:  # click >= 8.2 types ParamType as a generic; older clicks cannot subscript it
    _ParamType = click.ParamType[Any]
else:
    _ParamType = click.ParamType


class ConcurrencyType(_ParamType):
    """A positive integer, or ``auto``."""

    name = "concurrency"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "auto" or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"{value!r} is not a positive whole number or 'auto'", param, ctx)
        return number


@cli.command("run", short_help="Run a pipeline over every item of an input file.")
@click.argument("pipeline_file", metavar="PIPELINE.yaml", type=click.Path(dir_okay=False))
@click.option(
    "--input",
    "-i",
    "input_file",
    required=True,
    metavar="FILE",
    help="Items: .txt (a line each), .jsonl (an object each) or .csv (a header row).",
)
@click.option("--out", "-o", metavar="DIR", help="Output folder [default: runs/<run id>].")
@click.option(
    "--concurrency",
    "-c",
    type=ConcurrencyType(),
    metavar="N|auto",
    help="Chains in flight at once [default: the pipeline's, else 5]. 'auto' adapts to what the "
    "server takes (for servers that limit concurrency: Ollama, vLLM), up to --max-concurrency.",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    metavar="N",
    help="The cap for --concurrency auto.",
)
@click.option(
    "--rpm",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="Requests per minute allowed, per model [default: the pipeline's limits:, "
    "else learned from the provider's headers].",
)
@click.option(
    "--tpm",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="Tokens per minute allowed, per model (same defaults).",
)
@click.option("--model", metavar="MODEL", help="Use this model for every LLM stage, e.g. sim.")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Attempts per call before the item fails.",
)
@click.option(
    "--retry-passes",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Passes over the failed items after the main pass.",
)
@click.option("--sequential", is_flag=True, help="One item at a time (same as -c 1).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines; only the summary.")
@config_errors
def run_command(
    pipeline_file: str,
    input_file: str,
    out: str | None,
    concurrency: int | str | None,
    max_concurrency: int,
    rpm: float | None,
    tpm: float | None,
    model: str | None,
    max_attempts: int,
    retry_passes: int,
    sequential: bool,
    quiet: bool,
) -> None:
    """Run PIPELINE.yaml over every item of --input.

    \b
    Examples:
      chainfleet run examples/content.yaml --input examples/topics.txt
      chainfleet run examples/content.yaml -i rows.csv -c 20 --out runs/today
      chainfleet run examples/content.yaml -i topics.jsonl --sequential --quiet
      chainfleet run examples/content.yaml -i topics.txt --model openai:gpt-4o-mini --rpm 500 -c 50
      chainfleet run examples/content.yaml -i topics.txt --model ollama:llama3.1 -c auto

    Writes results.jsonl, report.json, report.md and one markdown file per item into the
    output folder. Exit code 0 when every item succeeded, 1 when some failed (the rest are
    saved), 2 for bad usage or input (no model called), 130 when interrupted.
    """
    if sequential and concurrency not in (None, 1):
        raise ConfigError("--sequential and --concurrency disagree; give one of them")
    pipeline = Pipeline.from_yaml(pipeline_file)
    run_id = new_run_id()
    out_dir = Path(out) if out else Path("runs") / run_id
    report = asyncio.run(
        _run(
            pipeline,
            input_file,
            out_dir,
            quiet=quiet,
            concurrency=1 if sequential else concurrency,
            model=model,
            max_attempts=max_attempts,
            retry_passes=retry_passes,
            rpm=rpm,
            tpm=tpm,
            max_concurrency=max_concurrency,
            run_id=run_id,
        )
    )
    for line in report.summary_lines():
        click.echo(line)
    click.echo(f"output: {out_dir}/ (results.jsonl, report.md, report.json, items/)")
    if report.input_error:
        click.echo(f"error: {report.input_error}", err=True)
    elif report.stopped:
        click.echo(
            f"error: the run stopped: {report.stopped}. Completed items are saved in {out_dir}/.",
            err=True,
        )
    sys.exit(report.exit_code)


async def _run(pipeline: Pipeline, input_file: str, out: Path, *, quiet: bool, **kwargs: Any) -> RunReport:
    printer = None if quiet else ProgressPrinter()
    try:
        return await arun(
            pipeline, input_file, out=out, on_start=printer.start if printer else None, **kwargs
        )
    finally:
        if printer:
            await printer.stop()
