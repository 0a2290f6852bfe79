"""``chainfleet run``: one pipeline over one input file."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from chainfleet.cli.group import cli, config_errors
from chainfleet.cli.options import input_option
from chainfleet.cli.progress import ProgressPrinter, output_progress
from chainfleet.errors import ConfigError
from chainfleet.pipeline.spec import Pipeline
from chainfleet.report.model import RunReport
from chainfleet.runner.core import MAX_CONCURRENCY, Runner, arun, finish_output, latest_run_id, new_run_id
from chainfleet.signals import STOP_SIGNALS, Interrupted, label, raise_on_signals, say, settle_streams
from chainfleet.store.diskfull import EXIT_DISK_FULL, is_disk_full
from chainfleet.store.diskfull import message as disk_full_message
from chainfleet.store.folder import acquire, open_store, release
from chainfleet.store.runstore import RunStore, StoreError

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
@click.argument("pipeline_file", metavar="PIPELINE.yaml", type=click.Path(dir_okay=False))
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
    force: bool,
    backend: str,
    address: str | None,
    workers: int | None,
    batch: bool,
    item_files: str,
    parquet: bool,
) -> None:
    """Run PIPELINE.yaml over every item of --input.

    \b
    Examples:
      chainfleet run examples/content.yaml --input examples/topics.txt
      chainfleet run examples/content.yaml -i rows.csv -c 20 --out runs/today
      chainfleet run examples/content.yaml -i topics.jsonl --sequential --quiet
      chainfleet run examples/content.yaml -i topics.txt --model openai:gpt-4o-mini --rpm 500 -c 50
      chainfleet run examples/content.yaml -i topics.txt --model ollama:llama3.1 -c auto
      chainfleet run examples/content.yaml -i topics.txt --out runs/today --resume
      chainfleet run examples/content.yaml -i topics.txt --model openai:gpt-4o --max-cost 5
      chainfleet run examples/content.yaml -i topics.txt --backend ray --address auto -c 64
      chainfleet run examples/content.yaml -i topics.txt --model openai:gpt-4o-mini --batch

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
    if resume and not out:
        raise ConfigError("--resume needs the --out folder of the run to continue")
    if limit_group is not None:
        from chainfleet.limits.group import check_name

        check_name(limit_group)
    settings = {
        "pipeline_file": str(Path(pipeline_file).resolve()),
        "input_file": str(Path(input_file).resolve()),
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
            "backend": backend,
            "address": address,
            "workers": workers,
            "batch": batch,
            "item_files": item_files,
            "parquet": parquet,
        },
    }
    execute(pipeline_file, input_file, out, settings, quiet=quiet, resume=resume, force=force)


def execute(
    pipeline_file: str,
    input_file: str,
    out: str | None,
    settings: dict[str, Any],
    *,
    quiet: bool,
    resume: bool,
    force: bool = False,
) -> None:
    """Run (or resume) and exit with the run's exit code; shared by ``run`` and ``resume``."""
    options = settings["cli"]
    pipeline = Pipeline.from_yaml(pipeline_file)
    new_id = new_run_id()
    out_dir = Path(out) if out else Path("runs") / new_id
    run_id = None if resume else new_id  # a resume goes on with the run in --out
    settings = {**settings, "fingerprint": fingerprint(pipeline_file, input_file)}
    if resume and (line := finished_run(out_dir, settings["fingerprint"])) is not None:
        say(line)
        settle_streams()
        sys.exit(0)
    try:
        report = asyncio.run(
            _run(
                pipeline,
                input_file,
                out_dir,
                quiet=quiet,
                concurrency=options["concurrency"],
                model=options["model"],
                max_attempts=options["max_attempts"],
                retry_passes=options["retry_passes"],
                rpm=options["rpm"],
                tpm=options["tpm"],
                limit_group=options.get("limit_group"),
                max_concurrency=options["max_concurrency"],
                run_id=run_id,
                resume=resume,
                cache=False if options["no_cache"] else options["cache"],
                max_cost=options["max_cost"],
                max_tokens=options["max_tokens"],
                batch=options.get("batch", False),
                settings=settings,
                force=force,
                backend=options.get("backend", "local"),  # runs saved before backends existed: local
                address=options.get("address"),
                workers=options.get("workers"),
                item_files=options.get("item_files", "auto"),
                parquet=options.get("parquet", False),
            )
        )
    except Interrupted as exc:  # during the output phase: the store has everything
        say(
            f"\n{exc} received while writing the output: stopped; every result is in {out_dir}/run.db. "
            f"Write the output with: chainfleet report {out_dir}",
            err=True,
        )
        settle_streams()
        sys.exit(130)
    except (OSError, sqlite3.Error) as exc:  # a full disk: one line, exit 74, nothing lost
        if not is_disk_full(exc):
            raise
        say(disk_full_message(out_dir), err=True)
        settle_streams()
        sys.exit(EXIT_DISK_FULL)
    for line in report.summary_lines():
        say(line)
    if report.reused or report.cache_hits:
        say(
            f"reused {report.reused} finished stage results and {report.cache_hits} cached "
            "responses: those were not called again"
        )
    say(f"output: {out_dir}/ (report.html, timeline.png, report.md, report.json, results.jsonl, items/)")
    if report.items_needs_review:
        say(
            f"{report.items_needs_review} item{'s wait' if report.items_needs_review > 1 else ' waits'} "
            f"for review: chainfleet review {out_dir} (then: chainfleet resume {out_dir})"
        )
    if report.input_error:
        say(f"error: {report.input_error}", err=True)
    elif report.stopped_kind == "interrupted":
        say(f"interrupted: everything finished is saved. Go on with: chainfleet resume {out_dir}", err=True)
    elif report.stopped and report.stopped.startswith("budget"):
        say(
            f"stopped: the {report.stopped}; spent ${report.cost_usd or 0:.4f}, "
            f"{report.tokens.get('input', 0) + report.tokens.get('output', 0):,} tokens",
            err=True,
        )
    elif report.stopped:
        say(
            f"error: the run stopped: {report.stopped.rstrip('.')}. Completed items are saved in {out_dir}/.",
            err=True,
        )
    settle_streams()  # a closed terminal or a full /dev/full never changes the exit code
    sys.exit(report.exit_code)


def fingerprint(*paths: str) -> str:
    """A digest of the files' bytes (the pipeline and the input): a finished run whose files
    changed since is not finished any more."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        with contextlib.suppress(OSError), open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def finished_run(out: Path, files: str) -> str | None:
    """What to say when the run in ``out`` is already finished (it ended, every item
    succeeded, and its pipeline and input files are as they were: ``files`` is their
    :func:`fingerprint`), so a resume has nothing to do and must change nothing; else None."""
    if not (out / "run.db").is_file():
        return None
    try:
        store = RunStore.open(out / "run.db")
    except StoreError:
        return None  # opening it for the run says what is wrong with it
    with store:
        run_id = latest_run_id(store)
        run = next((r for r in store.runs() if r["run_id"] == run_id), None)
    if run is None or run["status"] != "done" or run["settings"].get("fingerprint") != files:
        return None
    items = run["items"]
    if not items or set(items) != {"succeeded"}:
        return None
    return (
        f"nothing to resume: run {run_id} is finished ({items['succeeded']:,} items succeeded); "
        f"{out}/ is left as it was"
    )


async def _run(pipeline: Pipeline, input_file: str, out: Path, *, quiet: bool, **kwargs: Any) -> RunReport:
    """Run with the progress display and Ctrl-C handling: the first SIGINT or SIGTERM stops
    admission (the calls in flight finish), a second one cancels them; either way the output
    folder is written from what finished."""
    printer = None if quiet else ProgressPrinter()
    holder: dict[str, Runner] = {}
    main = asyncio.current_task()

    loop = asyncio.get_running_loop()
    installed: list[int] = []

    def on_start(runner: Runner) -> None:
        holder["runner"] = runner
        acquire(out)  # the folder stays held through the salvage after a hard stop
        installed.extend(_install(loop, on_signal))  # until now a signal raises Interrupted
        if printer:
            printer.start(runner)

    def on_signal(signum: int) -> None:
        runner = holder["runner"]
        if runner.interrupted:
            if main is not None:
                main.cancel()
            return
        runner.stop("interrupted")
        again = "Ctrl-C again" if signum == signal.SIGINT else f"send {label(signum)} again"
        say(
            f"\n{label(signum)} received: stopping: no new items; finishing the "
            f"{runner.stats.in_flight} chains in flight ({again} to stop at once)",
            err=True,
        )

    def on_output() -> None:
        """The output phase is plain work on this thread: a signal now raises Interrupted, which
        stops it (the store keeps everything; `chainfleet report` writes the output later)."""
        for sig in installed:
            loop.remove_signal_handler(sig)
        installed.clear()
        raise_on_signals()
        if printer:
            printer.pause()

    progress = None if quiet else output_progress()
    try:
        return await arun(
            pipeline,
            input_file,
            out=out,
            on_start=on_start,
            on_output=on_output,
            output_progress=progress,
            **kwargs,
        )
    except asyncio.CancelledError:
        runner = holder.get("runner")
        if runner is None:
            raise KeyboardInterrupt from None
        report = runner.salvage()
        finish_output(
            runner,
            report,
            out,
            item_files=kwargs.get("item_files", "auto"),
            parquet=kwargs.get("parquet", False),
            on_output=on_output,
            progress=progress,
        )
        return report
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        raise_on_signals()  # the output phase and the summary: a signal is still one clean line
        if printer:
            with contextlib.suppress(OSError):  # the terminal closed (SIGHUP): nothing to draw on
                await printer.stop()
        if "runner" in holder:
            release(out)


def _install(loop: asyncio.AbstractEventLoop, handler: Any) -> list[int]:
    installed = []
    for sig in STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, handler, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
            pass
    return installed


@cli.command("resume", short_help="Continue an interrupted or stopped run.")
@click.argument("out", metavar="OUT_DIR", type=click.Path(file_okay=False))
@click.option("--quiet", "-q", is_flag=True, help="No progress lines; only the summary.")
@config_errors
def resume_command(out: str, quiet: bool) -> None:
    """Continue the run in OUT_DIR with the pipeline, input and options it was started with:
    stage results already finished are not called again; failed items get their retry pass.

    \b
    Example:
      chainfleet resume runs/today
    """

    store = open_store(out, resume=True)
    runs = store.runs()
    store.close()
    release(out)
    if not runs:
        raise ConfigError("nothing to resume here: the store holds no run", where=out)
    started_by_cli = [r["settings"] for r in runs if {"pipeline_file", "cli"} <= r["settings"].keys()]
    if not started_by_cli:
        raise ConfigError(
            "this run was not started by `chainfleet run`; use `chainfleet run ... --resume`", where=out
        )
    settings = started_by_cli[-1]
    for key in ("pipeline_file", "input_file"):
        if not Path(settings[key]).exists():
            raise ConfigError(f"the run's {key.replace('_', ' ')} is gone: {settings[key]}", where=out)
    execute(settings["pipeline_file"], settings["input_file"], out, settings, quiet=quiet, resume=True)
