"""``chainfleet exec``: any program, in any language, run once per item as the item's chain.

::

    chainfleet exec -i topics.txt -c 5 -- python my_chain.py "{topic}"

Everything is checked before anything runs (exit 2, one line): the command (empty, not found),
each ``{field}`` placeholder against the input's fields (with a did-you-mean), the input
itself. Then the run is a ``chainfleet run`` whose work, per item, is the child process
(:class:`~chainfleet.code.command.CommandWork`): the same runner, limits, retries, journal,
retry pass, progress, Ctrl-C handling, report, results.jsonl and ``chainfleet resume``. The
child's model calls reach chainfleet through the local proxy (:mod:`chainfleet.code.proxy`),
started on the run's event loop for the length of the run. ``--compare`` runs the items one
at a time, then N at once, and compares (as ``chainfleet compare`` does for a pipeline).

The command's options are kept with the run (``settings["exec"]``), so ``chainfleet resume
OUT`` starts it again the same way (:func:`resume_exec`).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from chainfleet.cli.compare import display, print_comparison
from chainfleet.cli.execute import execute, fingerprint
from chainfleet.cli.group import cli, config_errors
from chainfleet.cli.options import input_option, otel_options, otel_settings
from chainfleet.code.command import CommandTemplate, CommandWork, open_items
from chainfleet.code.proxy import Proxy, Upstreams, gateway_send
from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline
from chainfleet.runner.compare import CompareReport, run_compare
from chainfleet.runner.core import MAX_CONCURRENCY, new_run_id
from chainfleet.signals import say, settle_streams

__all__ = ["exec_command", "resume_exec"]

#: the name the command's one stage has in the report, progress and results
STAGE = "command"


@cli.command(
    "exec",
    short_help="Run any program once per item, its model calls through chainfleet.",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@input_option
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    default=5,
    show_default=True,
    metavar="N",
    help="Commands running at once.",
)
@click.option("--out", "-o", metavar="DIR", help="Output folder [default: runs/<run id>].")
@click.option(
    "--stdin", "use_stdin", is_flag=True, help="Give each command its item as one JSON object on stdin."
)
@click.option(
    "--output-file",
    metavar="PATTERN",
    help="The item's output is this file, not stdout; {field} placeholders as in the command.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="End a command (and what it started) that runs longer; its item fails and gets the retry pass.",
)
@click.option("--compare", is_flag=True, help="Run one at a time, then -c at once, and compare.")
@click.option(
    "--rpm", type=click.FloatRange(min=0, min_open=True), metavar="N", help="Requests per minute, per model."
)
@click.option(
    "--tpm", type=click.FloatRange(min=0, min_open=True), metavar="N", help="Tokens per minute, per model."
)
@click.option(
    "--limit-group",
    metavar="NAME",
    help="Share each model's request budget with every other job on this machine given the same NAME.",
)
@click.option(
    "--model",
    metavar="PROVIDER:MODEL",
    help="Send the command's OpenAI calls (openai:NAME) or Anthropic calls (anthropic:NAME) to "
    "this model instead of the one they name.",
)
@click.option(
    "--max-cost",
    type=click.FloatRange(min=0),
    metavar="USD",
    help="Stop admitting items before the projected spend passes this; a call to a model with "
    "no price stops the run (with --model: refused before anything runs).",
)
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="A prices file (YAML: model -> {input, output} USD per million tokens) over the built-in table.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Attempts per model call.",
)
@click.option(
    "--retry-passes",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Passes over the failed items after the main pass (each runs the command again; its "
    "journaled model calls are answered from the run store).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out: journaled calls are not made again.")
@click.option("--force", is_flag=True, help="Write into --out even when it holds files but no run.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines; only the summary.")
@otel_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]...")
@config_errors
def exec_command(
    input_file: str,
    concurrency: int,
    out: str | None,
    use_stdin: bool,
    output_file: str | None,
    timeout: float | None,
    compare: bool,
    rpm: float | None,
    tpm: float | None,
    limit_group: str | None,
    model: str | None,
    max_cost: float | None,
    prices_file: str | None,
    max_attempts: int,
    retry_passes: int,
    resume: bool,
    force: bool,
    quiet: bool,
    otel: bool,
    otel_endpoint: str | None,
    otel_sample: float | None,
    otel_content: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND once per item of --input, --concurrency at a time: its model calls get
    chainfleet's limits, retries, journal, report and resume.

    \b
    Examples:
      chainfleet exec -i topics.txt -c 5 -- python my_chain.py "{topic}"
      chainfleet exec -i rows.csv -c 2 --compare -- ./my_chain.sh "{topic}" "{audience}"
      chainfleet exec -i items.jsonl --stdin --timeout 300 -- node chain.mjs
      chainfleet exec -i topics.txt --output-file "out/{id}.md" -- ./write.sh "{topic}" "out/{id}.md"

    Each {field} becomes one argument (never through a shell; {id} is the item's id); with
    --stdin the item's JSON is on the command's standard input. The command's model calls go
    through a local proxy: it gets OPENAI_BASE_URL and ANTHROPIC_BASE_URL pointing there (the
    official SDKs, and curl "$OPENAI_BASE_URL/chat/completions", follow them), and the proxy
    forwards to the OPENAI_BASE_URL / ANTHROPIC_BASE_URL chainfleet was given, else the official
    endpoints, with the command's own key or else chainfleet's. Output is the command's stdout
    (or --output-file); exit 0 is success, anything else fails the item with the exit code and
    the end of stderr (the whole of it is in the item's log). Exit codes as for `run`.
    """
    if resume and not out:
        raise ConfigError("--resume needs the --out folder of the run to continue")
    if compare and resume:
        raise ConfigError("--compare runs the items twice from the start; it cannot --resume")
    if limit_group is not None:
        from chainfleet.limits.group import check_name

        check_name(limit_group)
    spec = {
        "command": list(command),
        "stdin": use_stdin,
        "output_file": output_file,
        "timeout": timeout,
        "cwd": os.getcwd(),
    }
    options = {
        "concurrency": concurrency,
        "max_concurrency": concurrency,
        "rpm": rpm,
        "tpm": tpm,
        "limit_group": limit_group,
        "model": model,
        "max_attempts": max_attempts,
        "retry_passes": retry_passes,
        "cache": None,
        "no_cache": True,  # a command's calls may mean to differ each time: only the journal replays
        "max_cost": max_cost,
        "prices_file": str(Path(prices_file).resolve()) if prices_file else None,
        "max_tokens": None,
        **otel_settings(otel, otel_endpoint, otel_sample, otel_content),
    }
    settings = {"input_file": str(Path(input_file).resolve()), "exec": spec, "cli": options}
    if compare:
        compare_exec(settings, out, quiet=quiet)
    run_exec(settings, out, quiet=quiet, resume=resume, force=force)


def resume_exec(settings: dict[str, Any], out: str, *, quiet: bool) -> NoReturn:
    """``chainfleet resume OUT`` for a run ``chainfleet exec`` started: the same command, input
    and options, in the folder it was started from."""
    if not Path(settings["input_file"]).exists():
        raise ConfigError(f"the run's input file is gone: {settings['input_file']}", where=out)
    run_exec(settings, out, quiet=quiet, resume=True)


def run_exec(
    settings: dict[str, Any], out: str | None, *, quiet: bool, resume: bool, force: bool = False
) -> NoReturn:
    """Check the command and the input (exit 2), then run and exit with the run's exit code."""
    pipeline, proxy = exec_pipeline(settings["exec"], settings["input_file"])
    spec = settings["exec"]
    files = fingerprint(settings["input_file"]) + "|" + "\x00".join(spec["command"])
    saved = {**settings, "fingerprint": files}
    execute(
        pipeline,
        settings["input_file"],
        out,
        saved,
        quiet=quiet,
        resume=resume,
        force=force,
        around=lambda: proxy,
    )


def compare_exec(settings: dict[str, Any], out: str | None, *, quiet: bool) -> NoReturn:
    """``--compare``: the items one at a time, then ``-c`` at once (each run in its own folder
    and journal, so both really call), printed as ``chainfleet compare`` prints."""
    options = settings["cli"]
    n = options["concurrency"]
    if n < 2:
        raise ConfigError("a comparison needs a parallel run: give -c N with N of at least 2")
    pipeline, proxy = exec_pipeline(settings["exec"], settings["input_file"])
    out_dir = Path(out) if out else Path("runs") / f"compare-{new_run_id()}"
    keys = ("rpm", "tpm", "limit_group", "model", "max_attempts", "retry_passes", "max_cost")
    limits = {key: options.get(key) for key in keys}
    say(f"Running {shlex.join(settings['exec']['command'])} over each item: one at a time, then {n} at once.")

    async def both() -> CompareReport:
        async with proxy:
            progress = None if quiet else display
            return await run_compare(
                pipeline, settings["input_file"], concurrency=n, out=out_dir, progress=progress, **limits
            )

    report = asyncio.run(both())
    print_comparison(report, out_dir)
    settle_streams()
    sys.exit(report.exit_code)


def exec_pipeline(spec: dict[str, Any], input_file: str) -> tuple[Pipeline, Proxy]:
    """The checked command as a code pipeline whose work runs it per item, and the proxy its
    children's calls go through (not yet started: the run enters it on its event loop)."""
    template = CommandTemplate.parse(spec["command"], cwd=spec.get("cwd"))
    source = open_items(template, input_file, output_file=spec["output_file"])
    proxy = Proxy(gateway_send, upstreams=Upstreams.from_env())
    work = CommandWork(
        template=template,
        proxy=proxy,
        stdin=spec["stdin"],
        output_file=spec["output_file"],
        timeout=spec["timeout"],
        cwd=spec.get("cwd"),
    )
    field = next(iter(source.fields)) if source.format == "txt" and source.fields else "input"
    return Pipeline.from_function(work.run_item, name=STAGE, input=field), proxy
