"""``chainfleet resume OUT_DIR``: go on with a run, started as it was first started."""

from __future__ import annotations

from pathlib import Path

import click

from chainfleet.cli.execute import execute
from chainfleet.cli.group import cli, config_errors
from chainfleet.code.target import target_file
from chainfleet.errors import ConfigError
from chainfleet.store.folder import open_store, release


@cli.command("resume", short_help="Continue an interrupted or stopped run.")
@click.argument("out", metavar="OUT_DIR", type=click.Path(file_okay=False))
@click.option("--quiet", "-q", is_flag=True, help="No progress lines; only the summary.")
@config_errors
def resume_command(out: str, quiet: bool) -> None:
    """Continue the run in OUT_DIR with the pipeline (or `exec` command), input and options it
    was started with: stage results already finished, and journaled calls, are not called
    again; failed items get their retry pass.

    \b
    Example:
      chainfleet resume runs/today
    """

    store = open_store(out, resume=True)
    runs = store.runs()
    store.close()
    release(out)
    if not runs:  # a run is recorded before its first call: one killed earlier called nothing
        raise ConfigError(
            "nothing to resume here: the store holds no run (it was stopped before its first call, "
            "so nothing was paid); start it again with: chainfleet run PIPELINE -i INPUT -o "
            f"{out} --resume",
            where=out,
        )
    if {"exec", "cli"} <= runs[-1]["settings"].keys():  # started by `chainfleet exec`
        from chainfleet.cli.exec import resume_exec

        resume_exec(runs[-1]["settings"], out, quiet=quiet)
    started_by_cli = [r["settings"] for r in runs if {"pipeline_file", "cli"} <= r["settings"].keys()]
    if not started_by_cli:
        raise ConfigError(
            "this run was not started by `chainfleet run`; use `chainfleet run ... --resume`", where=out
        )
    settings = started_by_cli[-1]
    for key in ("pipeline_file", "input_file"):
        if settings[key] != "-" and not Path(target_file(settings[key])).exists():  # (-: stdin, piped again)
            raise ConfigError(f"the run's {key.replace('_', ' ')} is gone: {settings[key]}", where=out)
    execute(settings["pipeline_file"], settings["input_file"], out, settings, quiet=quiet, resume=True)
