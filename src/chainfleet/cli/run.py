"""``chainfleet run``: one pipeline over one input file.

The command reads its options into ``settings`` (what the run's store keeps, so ``chainfleet
resume`` can start the run again the same way) and hands them to
:func:`chainfleet.cli.execute.execute`, which runs, reports and exits.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from chainfleet.cli.group import cli, config_errors
from chainfleet.cli.options import input_option, otel_options, otel_settings
from chainfleet.config import MAX_CONCURRENCY
from chainfleet.errors import ConfigError

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
        if number > MAX_CONCURRENCY:
            self.fail(f"{number:,} is over the cap of {MAX_CONCURRENCY:,} chains in flight", param, ctx)
        return number


@cli.command("run", short_help="Run a pipeline over every item of an input file.")
@click.argument("pipeline_file", metavar="PIPELINE.yaml|FILE.py:FUNCTION", type=click.Path(dir_okay=False))
@input_option
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
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
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
@click.option(
    "--limit-group",
    metavar="NAME",
    help="Share each model's request budget with every other job on this machine given the same "
    "NAME (a locked file under your cache folder): jobs on one key keep to its limit together.",
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
@click.option(
    "--resume", is_flag=True, help="Continue the run in --out: completed stage results are not called again."
)
@click.option(
    "--cache",
    "cache_dir",
    metavar="DIR",
    help="Share a response cache (real providers, temperature 0) across runs in DIR.",
)
@click.option("--no-cache", is_flag=True, help="No response cache: every call really goes out.")
@click.option(
    "--force",
    is_flag=True,
    help="Write into --out even when it is a non-empty folder that holds no chainfleet run.",
)
@click.option(
    "--max-cost",
    type=click.FloatRange(min=0),
    metavar="USD",
    help="Stop admitting items before the projected spend passes this.",
)
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="A shared prices file (YAML: model -> {input, output} USD per million tokens) over the "
    "built-in table; the pipeline's prices: wins over it.",
)
@click.option(
    "--max-tokens",
    "max_tokens_budget",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop admitting items before the projected tokens pass this.",
)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where chains run: here, or in Ray actors on a cluster (pip install 'chainfleet[ray]').",
)
@click.option(
    "--address",
    metavar="auto|HOST:PORT|ray://HOST:10001",
    help="The Ray cluster [default: RAY_ADDRESS, else a Ray node started here on 127.0.0.1].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Ray worker actors [default: one per CPU of the cluster, at most --concurrency].",
)
@click.option(
    "--batch",
    is_flag=True,
    help="Send every LLM stage through the provider's batch API (half price, up to 24 h); "
    "the pipeline's mode: batch does it per stage.",
)
@click.option(
    "--item-files",
    type=click.Choice(["auto", "all", "none"]),
    default="auto",
    show_default=True,
    help="One markdown file per item in OUT/items/: auto writes them for runs of at most "
    "10,000 items (results.jsonl and results.parquet hold every item either way).",
)
@click.option(
    "--parquet",
    is_flag=True,
    help="Also write results.parquet (the same rows, as columns) for data tools "
    "(pip install 'chainfleet[parquet]').",
)
@click.option(
    "--trajectory-chars",
    type=click.IntRange(min=20),
    default=2000,
    show_default=True,
    help="How long a text of an agent's trajectory in results.jsonl may be (tool arguments, "
    "results, model text); the run store keeps every step whole.",
)
@click.option(
    "--input-format",
    type=click.Choice(["txt", "jsonl", "csv", "tsv", "parquet"]),
    help="Read --input as this format (its extension says otherwise); stdin (-i -) is txt unless jsonl.",
)
@click.option(
    "--id-column",
    metavar="COLUMN",
    help="The column holding each row's id, for a Parquet input [default: 'id' if there is "
    "one, else the row number].",
)
@click.option(
    "--results",
    metavar="-|FILE",
    help="Also write each finished item's record as a JSON line as it finishes, with its "
    "index: '-' for stdout (then stdout carries nothing else).",
)
@click.option("--ordered", is_flag=True, help="With --results: keep the records in input order.")
@otel_options
@config_errors
def run_command(
    pipeline_file: str,
    input_file: str,
    out: str | None,
    concurrency: int | str | None,
    max_concurrency: int,
    rpm: float | None,
    tpm: float | None,
    limit_group: str | None,
    model: str | None,
    max_attempts: int,
    retry_passes: int,
    sequential: bool,
    quiet: bool,
    resume: bool,
    cache_dir: str | None,
    no_cache: bool,
    max_cost: float | None,
    max_tokens_budget: int | None,
    prices_file: str | None,
    force: bool,
    backend: str,
    address: str | None,
    workers: int | None,
    batch: bool,
    item_files: str,
    parquet: bool,
    trajectory_chars: int,
    input_format: str | None,
    id_column: str | None,
    results: str | None,
    ordered: bool,
    otel: bool,
    otel_endpoint: str | None,
    otel_sample: float | None,
    otel_content: bool,
) -> None:
    """Run PIPELINE.yaml (or your own chain, FILE.py:FUNCTION) over every item of --input.

    \b
    Examples:
      chainfleet run examples/content.yaml --input examples/topics.txt
      chainfleet run examples/content.yaml -i rows.csv -c 20 --out runs/today
      chainfleet run examples/content.yaml -i topics.jsonl --sequential --quiet
      chainfleet run examples/content.yaml -i topics.txt --model openai:gpt-4o-mini --rpm 500 -c 50
      chainfleet run examples/content.yaml -i topics.txt --model ollama:llama3.1 -c auto
      chainfleet run examples/content.yaml -i topics.txt --out runs/today --resume
      chainfleet run examples/content.yaml -i topics.txt --model openai:gpt-4o --max-cost 5
      chainfleet run examples/content.yaml -i topics.txt --model openai:gpt-5 --prices prices.yaml
      chainfleet run examples/content.yaml -i topics.txt --backend ray --address auto -c 64
      chainfleet run examples/content.yaml -i topics.txt --model openai:gpt-4o-mini --batch
      chainfleet run examples/own_chain.py:article -i examples/topics.txt -c 10
      cat topics.txt | chainfleet run examples/content.yaml -i - --results - | jq .outputs.edit
      chainfleet run examples/content.yaml -i data/ --id-column doc_id    a folder of .parquet

    Writes results.jsonl, report.json, report.md and one markdown file per item into the
    output folder, and keeps every finished stage result in its run.db as it arrives.
    Ctrl-C stops admitting items and lets the calls in flight finish (a second Ctrl-C stops at
    once); either way nothing finished is lost, and `chainfleet resume DIR` goes on. Exit code
    0 when every item succeeded, 1 when some failed (the rest are saved), 2 for bad usage or
    input (no model called), 130 when interrupted.
    """
    if sequential and concurrency not in (None, 1):
        raise ConfigError("--sequential and --concurrency disagree; give one of them")
    if cache_dir and no_cache:
        raise ConfigError("--cache and --no-cache disagree; give one of them")
    if ordered and not results:
        raise ConfigError("--ordered orders the records of --results; give --results - (or a file)")
    if resume and not out:
        raise ConfigError("--resume needs the --out folder of the run to continue")
    tracing = otel_settings(otel, otel_endpoint, otel_sample, otel_content)
    if limit_group is not None:
        from chainfleet.limits.group import check_name

        check_name(limit_group)
    from chainfleet.code.target import resolved  # (not for `chainfleet run --help`)

    settings = {
        "pipeline_file": resolved(pipeline_file),
        "input_file": input_file if input_file == "-" else str(Path(input_file).resolve()),
        "cli": {
            "concurrency": 1 if sequential else concurrency,
            "max_concurrency": max_concurrency,
            "rpm": rpm,
            "tpm": tpm,
            "limit_group": limit_group,
            "model": model,
            "max_attempts": max_attempts,
            "retry_passes": retry_passes,
            "cache": cache_dir,
            "no_cache": no_cache,
            "max_cost": max_cost,
            "max_tokens": max_tokens_budget,
            "prices_file": str(Path(prices_file).resolve()) if prices_file else None,
            "backend": backend,
            "address": address,
            "workers": workers,
            "batch": batch,
            "item_files": item_files,
            "parquet": parquet,
            "trajectory_chars": trajectory_chars,
            "input_format": input_format,
            "id_column": id_column,
            "results": results,
            "ordered": ordered,
            **tracing,
        },
    }
    from chainfleet.cli.execute import execute  # the runner: not for `chainfleet run --help`

    execute(pipeline_file, input_file, out, settings, quiet=quiet, resume=resume, force=force)
