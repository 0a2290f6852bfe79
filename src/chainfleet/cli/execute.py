"""Running a pipeline from the command line: what ``chainfleet run`` and ``chainfleet resume`` share.

:func:`execute` runs (or resumes) one pipeline over one input file into an output folder, says
how it went and exits with the run's exit code. Around the library's ``arun`` it adds what only
a command needs:

- the progress display (:class:`~chainfleet.cli.progress.Progress`), paused while the output
  folder is written, and the output phase's own progress line;
- its own signal handlers once the run has started: the first Ctrl-C, SIGTERM or SIGHUP stops
  admitting items and lets the chains in flight finish, a second one cancels them; either way
  the output folder is written from what finished. Before that, and while the output is
  written, a signal raises :class:`~chainfleet.signals.Interrupted` instead;
- the summary, one line for how the run ended (interrupted, a budget, a fatal error, the disk
  full) and the exit code;
- the check that makes resuming a finished run call nothing: the run ended, every item
  succeeded and its pipeline and input files still have the same bytes (:func:`finished_run`);
  its output folder is then left as it was, or written again from the store when the output
  phase never ended (killed while writing it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import sqlite3
import sys
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, NoReturn

from chainfleet.cli.pipes import STDOUT_CLOSED, ResultsOut
from chainfleet.cli.progress import Progress, output_progress
from chainfleet.code.target import target_file
from chainfleet.config import RunSettings
from chainfleet.inputs import InputSource, open_input
from chainfleet.pipeline import Pipeline
from chainfleet.pipeline.prices_file import load_prices
from chainfleet.report.model import RunReport
from chainfleet.report.output import output_complete, rewrite_output
from chainfleet.runner.api import arun, finish_output, load_pipeline
from chainfleet.runner.core import Runner, latest_run_id, new_run_id
from chainfleet.signals import (
    STOP_SIGNALS,
    Interrupted,
    label,
    raise_on_signals,
    say,
    settle_streams,
    signal_point,
    stop_at_once,
)
from chainfleet.store.diskfull import EXIT_DISK_FULL, is_disk_full
from chainfleet.store.diskfull import message as disk_full_message
from chainfleet.store.folder import acquire, held, release
from chainfleet.store.runstore import RunStore, StoreError

__all__ = ["execute", "finished_run", "fingerprint"]


def execute(
    pipeline_file: str | Pipeline,
    input_file: str,
    out: str | None,
    settings: dict[str, Any],
    *,
    quiet: bool,
    resume: bool,
    force: bool = False,
    around: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
) -> NoReturn:
    """Run (or resume) and exit with the run's exit code; shared by ``run``, ``resume`` and
    ``exec``.

    ``settings`` is what the run's store keeps: the two files' paths and ``cli``, the command's
    options, which a later ``chainfleet resume`` starts the run with again. A ready
    ``Pipeline`` (``chainfleet exec``'s) brings its own ``settings["fingerprint"]``; ``around``
    is entered on the run's event loop around the whole run (``exec``'s local proxy)."""
    given = settings["cli"]
    piped = input_file == "-"
    if isinstance(pipeline_file, Pipeline):
        pipeline = pipeline_file
    else:  # a YAML file, or the user's own chain (file.py:fn)
        pipeline = load_pipeline(pipeline_file, None if piped else input_file)
        settings = {**settings, "fingerprint": fingerprint(target_file(pipeline_file), input_file)}
    items: str | InputSource = input_file
    if piped or given.get("input_format") or given.get("id_column"):  # stdin, or told how to read
        items = open_input(
            input_file,
            input_field=pipeline.input,
            format=given.get("input_format"),
            id_column=given.get("id_column"),
        )
    results = given.get("results")
    ordered = given.get("ordered", False)
    writer = ResultsOut(results, ordered=ordered, on_closed=lambda: None) if results else None
    new_id = new_run_id()
    out_dir = Path(out) if out else Path("runs") / new_id
    if resume and (done := finished_run(out_dir, settings["fingerprint"])) is not None:
        _finish_finished(out_dir, done, settings["cli"])
    run_id = None if resume else new_id  # a resume goes on with the run in --out
    options = cli_settings(settings["cli"], run_id=run_id, resume=resume, force=force)
    phases: list[str] = []
    run = _run(pipeline, items, out_dir, options, quiet=quiet, saved=settings, phases=phases, results=writer)
    if around is not None:
        run = _within(around, run)
    report = _run_or_exit(run, out_dir, phases)
    if writer is not None:
        writer.close()
    stop_at_once(f"as the run ended: stopped; its output in {out_dir}/ is complete")
    _say_outcome(report, out_dir, err=results == "-")  # stdout carries the records alone
    signal_point("summary")  # tests: a signal once the summary is out
    settle_streams()  # a closed terminal or a full /dev/full never changes the exit code
    if writer is not None and writer.closed and not report.items_failed and report.exit_code == 1:
        sys.exit(0)  # the reader went away (| head -3): what finished is what was asked for
    sys.exit(report.exit_code)


async def _within(
    around: Callable[[], AbstractAsyncContextManager[Any]], run: Coroutine[Any, Any, RunReport]
) -> RunReport:
    async with around():
        return await run


def _run_or_exit(run: Coroutine[Any, Any, RunReport], out_dir: Path, phases: list[str]) -> RunReport:
    """``asyncio.run(run)``; a signal before the first call or while the output is written, or
    a full disk, ends the command with one line and its exit code (130, 74): the store keeps
    what finished. ``phases`` says how far the run got (``running``, then ``output``)."""
    try:
        return asyncio.run(run)
    except Interrupted as exc:
        if "output" in phases:  # the store has everything
            say(
                f"\n{exc} received while writing the output: stopped; every result is in "
                f"{out_dir}/run.db. Write the output with: chainfleet report {out_dir}",
                err=True,
            )
        else:  # while the input was checked (a long scan): nothing ran yet
            say(f"\n{exc} received before the first call: stopped; no model was called", err=True)
        settle_streams()
        sys.exit(130)
    except (OSError, sqlite3.Error) as exc:  # a full disk: one line, exit 74, nothing lost
        if not is_disk_full(exc):
            raise
        say(disk_full_message(out_dir), err=True)
        settle_streams()
        sys.exit(EXIT_DISK_FULL)


def cli_settings(options: dict[str, Any], *, run_id: str | None, resume: bool, force: bool) -> RunSettings:
    """The run's settings from the command's saved options (``settings["cli"]``); runs saved
    before an option existed get its default (``backend`` local, no ``limit_group``)."""
    return RunSettings(
        concurrency=options["concurrency"],
        max_concurrency=options["max_concurrency"],
        model=options["model"],
        max_attempts=options["max_attempts"],
        retry_passes=options["retry_passes"],
        rpm=options["rpm"],
        tpm=options["tpm"],
        limit_group=options.get("limit_group"),
        run_id=run_id,
        resume=resume,
        force=force,
        cache=False if options["no_cache"] else options["cache"],
        max_cost=options["max_cost"],
        max_tokens=options["max_tokens"],
        prices=load_prices(options["prices_file"]) if options.get("prices_file") else None,
        batch=options.get("batch", False),
        backend=options.get("backend", "local"),
        address=options.get("address"),
        workers=options.get("workers"),
        item_files=options.get("item_files", "auto"),
        parquet=options.get("parquet", False),
        trajectory_chars=options.get("trajectory_chars", 2000),
        otel=options.get("otel", False),
        otel_endpoint=options.get("otel_endpoint"),
        otel_sample=options.get("otel_sample", 1.0),
        otel_content=options.get("otel_content", False),
    )


def _say_outcome(report: RunReport, out_dir: Path, *, err: bool = False) -> None:
    """The summary on stdout (stderr with ``err``: stdout carries data), then (on stderr) why
    the run stopped, if it stopped early."""
    for line in report.summary_lines():
        say(line, err=err)
    if report.reused or report.cache_hits:
        say(
            f"reused {report.reused} finished stage results and {report.cache_hits} cached "
            "responses: those were not called again",
            err=err,
        )
    say(
        f"output: {out_dir}/ (report.html, timeline.png, report.md, report.json, results.jsonl, items/)",
        err=err,
    )
    if report.items_needs_review:
        say(
            f"{report.items_needs_review} item{'s wait' if report.items_needs_review > 1 else ' waits'} "
            f"for review: chainfleet review {out_dir} (then: chainfleet resume {out_dir})",
            err=err,
        )
    if report.stopped == STDOUT_CLOSED:
        say(f"stopped: {STDOUT_CLOSED}; what finished is in {out_dir}/", err=True)
        return
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
        again = f" Go on with: chainfleet resume {out_dir}" if report.stopped_kind == "endpoint_down" else ""
        say(
            f"error: the run stopped: {report.stopped.rstrip('.')}. Completed items are saved in "
            f"{out_dir}/.{again}",
            err=True,
        )


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


def finished_run(out: Path, files: str) -> dict[str, Any] | None:
    """The run in ``out`` (a row of ``RunStore.runs()``) when it is already finished: it ended,
    every item succeeded, and its pipeline and input files are as they were (``files`` is their
    :func:`fingerprint`), so a resume calls no model; else None."""
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
    return run


def _finish_finished(out: Path, run: dict[str, Any], options: dict[str, Any]) -> NoReturn:
    """Resuming a finished run: nothing is called. Its output folder is left as it was when it
    is complete; when it is not (the process was killed or stopped while writing it, or a file
    was deleted since), it is written again from the store, and the line says so. Exit 0, or
    130 when a signal stops the writing (resume again to finish it)."""
    head = f"run {run['run_id']} is finished ({run['items']['succeeded']:,} items succeeded)"
    if output_complete(out, run):
        say(f"nothing to resume: {head}; {out}/ is left as it was")
        settle_streams()
        sys.exit(0)
    try:
        with held(out):
            rewrite_output(
                out,
                run_id=run["run_id"],
                item_files=options.get("item_files", "auto"),
                parquet=options.get("parquet", False),
            )
    except Interrupted as exc:
        say(
            f"\n{exc} received while writing the output: stopped; finish it with: chainfleet resume {out}",
            err=True,
        )
        settle_streams()
        sys.exit(130)
    say(
        f"nothing to call: {head}, but its output was not written to its end (stopped while it "
        f"was written, or a file removed since): wrote {out}/ again from its run store "
        "(report.html, timeline.png, report.md, report.json, results.jsonl)"
    )
    settle_streams()
    sys.exit(0)


async def _run(
    pipeline: Pipeline,
    input_file: str | InputSource,
    out: Path,
    settings: RunSettings,
    *,
    quiet: bool,
    saved: dict[str, Any],
    phases: list[str],
    results: ResultsOut | None = None,
) -> RunReport:
    """Run with the progress display and Ctrl-C handling: the first SIGINT or SIGTERM stops
    admission and each chain at its next stage boundary (the calls in flight finish), a second
    one cancels them; either way the output
    folder is written from what finished. ``phases`` gets ``running`` at the first admission's
    eve and ``output`` when the output phase starts."""
    printer = None if quiet else Progress()
    holder: dict[str, Runner] = {}
    main = asyncio.current_task()

    loop = asyncio.get_running_loop()
    installed: list[int] = []

    def on_start(runner: Runner) -> None:
        phases.append("running")
        holder["runner"] = runner
        acquire(out)  # the folder stays held through the salvage after a hard stop
        installed.extend(_install(loop, on_signal))  # until now a signal raises Interrupted
        if results is not None:
            results.on_closed = lambda: runner.stop(STDOUT_CLOSED)
            runner.on_record = results
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
            f"\n{label(signum)} received: stopping: no new items or stages; finishing the stage "
            f"each of the {runner.stats.in_flight} chains in flight is in ({again} to stop at once)",
            err=True,
        )

    def on_output() -> None:
        """The output phase is plain work on this thread: a signal now raises Interrupted, which
        stops it (the store keeps everything; `chainfleet report` writes the output later)."""
        phases.append("output")
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
            settings,
            out=out,
            saved=saved,
            on_start=on_start,
            on_output=on_output,
            output_progress=progress,
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
            item_files=settings.item_files,
            parquet=settings.parquet,
            trajectory_chars=settings.trajectory_chars,
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
