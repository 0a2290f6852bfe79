"""``chainfleet report`` (render a run's reports again from its store) and ``chainfleet runs``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from ..folder import held, owner
from ..output import rewrite_output, store_problem
from ..report import fmt_seconds
from ..review.queue import ReviewQueue
from ..store import RunStore, StoreError
from . import cli, config_errors


@cli.command("report", short_help="Write a run's reports again from its run store.")
@click.argument("out_dir", metavar="OUT_DIR")
@click.option("--run", "run_id", metavar="RUN_ID", help="This run of the store [default: the latest].")
@config_errors
def report_command(out_dir: str, run_id: str | None) -> None:
    """Write report.md, report.html, timeline.png, results.jsonl and the item files of OUT_DIR
    again from OUT_DIR/run.db, without calling any model (report.json too, when it is missing).

    \b
    Examples:
      chainfleet report runs/today
      chainfleet report runs/today --run 20250101-120000-ab12cd

    A run that ended keeps the numbers it reported; one killed mid-way (or still running) is
    rebuilt from the calls and items in its store.
    """
    if Path(out_dir, "run.db").is_file():
        with held(out_dir):  # never while a run is writing the same files
            killed = _killed(Path(out_dir), run_id)
            report = rewrite_output(Path(out_dir), run_id=run_id)
    else:
        killed = False
        report = rewrite_output(Path(out_dir), run_id=run_id)  # says what is missing
    for line in report.summary_lines():
        click.echo(line)
    if killed:
        click.echo(f"interrupted (resumable): its process ended mid-run; chainfleet resume {out_dir}")
    click.echo(f"rewrote {out_dir}/: report.md, report.html, timeline.png, results.jsonl, items/")


def _killed(out: Path, run_id: str | None) -> bool:
    """Whether the run (the latest, or ``run_id``) says "running" though no process owns its
    folder (checked while this command holds the folder): its owner was killed."""
    try:
        with RunStore.open(out / "run.db") as store:
            runs = store.runs()
    except StoreError:
        return False  # rewrite_output names the problem
    chosen = [r for r in runs if run_id is None or r["run_id"] == run_id]
    return bool(chosen) and chosen[-1]["status"] == "running"


@cli.command("runs", short_help="List the runs under a folder.")
@click.argument("folder", metavar="[DIR]", default="runs")
@config_errors
def runs_command(folder: str) -> None:
    """List the runs found under DIR [default: runs]: DIR/run.db and every DIR/*/run.db.

    \b
    Examples:
      chainfleet runs
      chainfleet runs ~/work/batches

    A store that cannot be read is named on stderr and skipped.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError("no such folder", where=folder)
    paths = ([root / "run.db"] if (root / "run.db").is_file() else []) + sorted(root.glob("*/run.db"))
    rows: list[dict[str, Any]] = []
    bad: list[str] = []
    for path in paths:
        try:
            with RunStore.open(path) as store:
                review = ReviewQueue(store.db).counts()
                found = store.runs()
            alive = owner(path.parent) is not None
            for run in found:
                if run["status"] == "running" and not (alive and run is found[-1]):
                    run["status"] = "interrupted (resumable)"  # its owner died mid-run
                rows.append({**run, "folder": path.parent, "review": review})
        except StoreError as exc:
            if path.parent == root:
                raise ConfigError(store_problem(exc), where=str(path)) from exc
            bad.append(f"skipped {path}: {store_problem(exc)}")
    if not rows:
        click.echo(f"no runs under {folder}/")
    else:
        _print_table(sorted(rows, key=lambda r: r["started"]))
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
        str(run["status"]),
        str(items.get("succeeded", 0)),
        str(items.get("failed", 0)),
        str(items.get("skipped", 0)),
        _review_cell(run),
        fmt_seconds(wall) if wall is not None else "-",
        f"{saved:.0f}%" if saved is not None else "-",
        str(run["folder"]),
    )


def _review_cell(run: dict[str, Any]) -> str:
    """``waiting/approved/edited/rejected`` of the store's review queue, ``-`` when none."""
    review = run.get("review") or {}
    if not any(review.values()):
        return "-"
    return "{waiting}w {approved}a {edited}e {rejected}r".format(**review)
