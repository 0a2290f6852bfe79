"""``chainfleet report`` (render a run's reports again from its store) and ``chainfleet runs``."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, cast

import click

from chainfleet.cli.group import cli, config_errors
from chainfleet.cli.progress import output_progress
from chainfleet.errors import ConfigError
from chainfleet.report.duration import fmt_duration
from chainfleet.report.output import rewrite_output, store_problem
from chainfleet.report.results import ItemFiles
from chainfleet.store.folder import held, owner
from chainfleet.store.review_queue import ReviewQueue
from chainfleet.store.runstore import RunStore, StoreError


@cli.command("report", short_help="Write a run's output folder again from its run store.")
@click.argument("out_dir", metavar="OUT_DIR")
@click.option("--run", "run_id", metavar="RUN_ID", help="This run of the store [default: the latest].")
@click.option(
    "--item-files",
    type=click.Choice(["auto", "all", "none"]),
    default="auto",
    show_default=True,
    help="One markdown file per item: auto writes them for runs of at most 10,000 items.",
)
@click.option("--parquet", is_flag=True, help="Also write results.parquet (needs the parquet extra).")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
@config_errors
def report_command(out_dir: str, run_id: str | None, item_files: str, parquet: bool, quiet: bool) -> None:
    """Write every file of OUT_DIR again from OUT_DIR/run.db alone, without calling any model:
    report.json, report.md, report.html, timeline.png, results.jsonl (and results.parquet with
    --parquet) and the item files.

    \b
    Examples:
      chainfleet report runs/today
      chainfleet report runs/today --run 20250101-120000-ab12cd
      chainfleet report runs/huge --item-files none --parquet

    It finishes an output that was interrupted (Ctrl-C while the run wrote its output), and
    reports a run killed mid-way (or still running) from what its store holds. Ctrl-C stops it;
    the store is never changed by it but for the quality scores it keeps.
    """
    progress = None if quiet else output_progress()
    files = cast(ItemFiles, item_files)
    try:
        killed = False
        if Path(out_dir, "run.db").is_file():
            with held(out_dir):  # never while a run is writing the same files
                killed, never = _settle_killed(Path(out_dir), run_id)
                report = rewrite_output(
                    Path(out_dir), run_id=run_id, item_files=files, progress=progress, parquet=parquet
                )
        else:
            report = rewrite_output(Path(out_dir), run_id=run_id)  # says what is missing
    except KeyboardInterrupt as exc:
        click.echo(
            f"\n{exc or 'Ctrl-C'} received: stopped; run chainfleet report {out_dir} again to finish",
            err=True,
        )
        sys.exit(130)
    for line in report.summary_lines():
        click.echo(line)
    if killed:
        if never:
            click.echo(f"{never:,} items were never admitted: listed as skipped in results.jsonl")
        click.echo(f"interrupted (resumable): its process ended mid-run; chainfleet resume {out_dir}")
    written = "report.json, report.md, report.html, timeline.png, results.jsonl"
    if Path(out_dir, "results.parquet").is_file():
        written += ", results.parquet"
    click.echo(f"rewrote {out_dir}/: {written}" + (", items/" if Path(out_dir, "items").is_dir() else ""))


def _settle_killed(out: Path, run_id: str | None) -> tuple[bool, int]:
    """Whether the run (the latest, or ``run_id``) was killed (it says "running" though no
    process owns its folder: this command holds it), and how many of its items it never
    admitted. Those are recorded as skipped, read from the run's own input file (none when that
    file is gone or no longer reads), as a run that stops records its rest; resume runs them.
    Its open session is closed as ``killed-unknown``, as the next session of the run would."""
    from chainfleet.code.target import load_pipeline
    from chainfleet.runner.api import as_source

    try:
        store = RunStore.open(out / "run.db")
    except StoreError:
        return False, 0  # rewrite_output names the problem
    with store:
        runs = [r for r in store.runs() if run_id is None or r["run_id"] == run_id]
        if not runs or runs[-1]["status"] != "running":
            return False, 0
        run_id = str(runs[-1]["run_id"])
        store.sessions.close_dead(run_id)
        store.flush()
        settings = runs[-1].get("settings") or {}
        pipeline_file, input_file = settings.get("pipeline_file"), settings.get("input_file")
        if not pipeline_file or not input_file or not Path(input_file).is_file():
            return True, 0
        count = "SELECT COUNT(*) FROM items WHERE run_id = ?"
        (before,) = store.db.execute(count, (run_id,)).fetchone()
        error = {
            "stage": None,
            "type": "skipped",
            "message": f"not run: the run was killed before admitting it ({out} is resumable)",
        }
        try:
            source = as_source(input_file, load_pipeline(pipeline_file))
            # an item the run recorded keeps its outcome (save_skipped inserts only new ones)
            store.save_skipped(run_id, ((i.index, i.id, i.fields) for i in source), error)
            store.flush()
        except (ConfigError, OSError):
            return True, 0  # the pipeline or input changed since: the report shows the store
        (after,) = store.db.execute(count, (run_id,)).fetchone()
        return True, int(after) - int(before)


@cli.command("runs", short_help="List the runs under a folder.")
@click.argument("folder", metavar="[DIR]", default="runs")
@config_errors
def runs_command(folder: str) -> None:
    """List the runs found under DIR [default: runs]: DIR/run.db, every DIR/*/run.db and the
    two runs of each comparison (DIR/*/*/run.db).

    \b
    Examples:
      chainfleet runs
      chainfleet runs ~/work/batches

    A store that holds no run (its command was stopped before the first call) is named with
    the command that starts it. A store that cannot be read is named on stderr and skipped;
    one that can be read but not written (a read-only mount) is listed, marked "(read-only)".
    A run whose output was interrupted shows "output unfinished": `chainfleet report DIR`
    writes it.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError("no such folder", where=folder)
    paths = ([root / "run.db"] if (root / "run.db").is_file() else []) + sorted(root.glob("*/run.db"))
    paths += sorted(root.glob("*/*/run.db"))  # a comparison: DIR/compare-ID/{sequential,parallel}/
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    empty: list[Path] = []
    for path in paths:
        try:
            with RunStore.open_to_read(path) as store:  # a read-only mount is listed too
                review = ReviewQueue(store.db).counts()
                found = store.runs()
                read_only = store.read_only is not None
            if not found:  # killed between making run.db and recording its run
                empty.append(path.parent)
            alive = owner(path.parent) is not None
            for run in found:
                if run["status"] == "running" and not (alive and run is found[-1]):
                    run["status"] = "interrupted (resumable)"  # its owner died mid-run
                folder_cell = f"{path.parent} (read-only)" if read_only else path.parent
                rows.append({**run, "folder": folder_cell, "review": review})
        except StoreError as exc:
            if path.parent == root:
                raise ConfigError(store_problem(exc), where=str(path)) from exc
            bad.append(f"skipped {path}: {store_problem(exc)}")
    if not rows and not empty:
        click.echo(f"no runs under {folder}/")
    elif rows:
        _print_table(sorted(rows, key=lambda r: r["started"]))
    for out in empty:
        click.echo(
            f"{out}/: no run: stopped before its first call (nothing was paid); start it with: "
            f"chainfleet run PIPELINE -i INPUT -o {out} --resume"
        )
    for line in bad:
        click.echo(line, err=True)


HEADERS = (
    "run",
    "pipeline",
    "started",
    "status",
    "ok",
    "failed",
    "skipped",
    "review",
    "wall",
    "saved",
    "folder",
)


def _print_table(rows: list[dict[str, Any]]) -> None:
    table = [HEADERS] + [_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    right = {4, 5, 6, 8, 9}
    for row in table:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


def _cells(run: dict[str, Any]) -> tuple[str, ...]:
    summary = run.get("summary") or {}
    items = run.get("items") or {}
    wall, saved = summary.get("wall_seconds"), summary.get("time_saved_pct")
    return (
        str(run["run_id"]),
        str(run["pipeline"]),
        time.strftime("%Y-%m-%d %H:%M", time.localtime(run["started"])),
        str(run["status"]) + (", output unfinished" if run.get("output") == "writing" else ""),
        str(items.get("succeeded", 0)),
        str(items.get("failed", 0)),
        str(items.get("skipped", 0)),
        _review_cell(run),
        fmt_duration(wall) if wall is not None else "-",
        _saved_cell(saved, summary.get("concurrency")),
        str(run["folder"]),
    )


def _saved_cell(saved: float | None, concurrency: int | None) -> str:
    """The time saved against one at a time: "-" for a run made one at a time (nothing to save:
    not "-0%") or a batch run, "slower" rather than a negative percentage."""
    if saved is None or concurrency == 1:
        return "-"
    return "slower" if saved < -0.5 else f"{max(saved, 0.0):.0f}%"


def _review_cell(run: dict[str, Any]) -> str:
    """``waiting/approved/edited/rejected`` of the store's review queue, ``-`` when none."""
    review = run.get("review") or {}
    if not any(review.values()):
        return "-"
    return "{waiting}w {approved}a {edited}e {rejected}r".format(**review)
