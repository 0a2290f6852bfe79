"""``chainfleet review OUT_DIR``: the items waiting for a person, in the terminal, from a
script, or on a local web page."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from chainfleet.cli.group import cli, config_errors
from chainfleet.errors import ConfigError

#: entries one page of ``--list`` prints
LIST_PAGE = 200

if TYPE_CHECKING:
    from chainfleet.review.session import ReviewSession


@cli.command("review", short_help="Approve, edit or send back the items waiting for review.")
@click.argument("out", metavar="OUT_DIR", type=click.Path(file_okay=False))
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--list", "list_", is_flag=True, help="Print the queue (id, stage, quality, why) and exit.")
@click.option("--approve", is_flag=True, help="Approve the items ID...")
@click.option("--reject", "reject_id", metavar="ID", help="Send item ID back (needs --note).")
@click.option("--note", metavar="TEXT", help="The rejection's note: the stage sees it as {{ feedback }}.")
@click.option("--from", "from_stage", metavar="STAGE", help="Re-run from STAGE [default: the reviewed one].")
@click.option("--approve-all", is_flag=True, help="Approve every waiting item (narrow it with --where).")
@click.option("--where", metavar="EXPR", help="With --approve-all: e.g. 'quality >= 80' (a safe expression).")
@click.option("--export", "export_file", metavar="FILE", help="Write every decision as JSON lines.")
@click.option("--reviewer", metavar="NAME", help="Who decides [default: the OS user].")
@click.option("--web", is_flag=True, help="Serve a review page on 127.0.0.1 (random port and token).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, help="With --web: the port [default: random]."
)
@click.option(
    "--page",
    type=click.IntRange(min=1),
    default=1,
    help=f"With --list: which {LIST_PAGE} items [default: 1].",
)
@config_errors
def review_command(
    out: str,
    ids: tuple[str, ...],
    list_: bool,
    approve: bool,
    reject_id: str | None,
    note: str | None,
    from_stage: str | None,
    approve_all: bool,
    where: str | None,
    export_file: str | None,
    reviewer: str | None,
    web: bool,
    port: int,
    page: int,
) -> None:
    """Review the items of OUT_DIR that wait for a person (a stage's `review:`), then go on
    with `chainfleet resume OUT_DIR`: approved and edited items take their next stages,
    rejected ones re-run from their stage with the note as {{ feedback }}.

    \b
    Examples:
      chainfleet review runs/today                       one item at a time, keys a/e/r/s/u/q
      chainfleet review runs/today --list                200 at a time: --page 2 for the next
      chainfleet review runs/today --approve 3 7 12
      chainfleet review runs/today --reject 5 --note "cite a source" --from research
      chainfleet review runs/today --approve-all --where 'quality >= 80'
      chainfleet review runs/today --export decisions.jsonl
      chainfleet review runs/today --web                 a local page; open the printed URL

    An unknown id, or one not waiting, is exit code 2 and changes nothing.
    """
    from chainfleet.review.session import ReviewSession

    actions = [bool(list_), approve, reject_id is not None, approve_all, export_file is not None, web]
    if sum(actions) > 1:
        raise ConfigError("give one of --list, --approve, --reject, --approve-all, --export, --web")
    if ids and not approve:
        raise ConfigError(f"item ids ({' '.join(ids)}) are only for --approve")
    if approve and not ids:
        raise ConfigError("--approve needs the ids of the items to approve")
    if (note is not None or from_stage is not None) and reject_id is None:
        raise ConfigError("--note and --from go with --reject ID")
    if reject_id is not None and not note:
        raise ConfigError("--reject needs --note TEXT: the stage sees it as {{ feedback }}")
    if where is not None and not approve_all:
        raise ConfigError("--where goes with --approve-all")
    to_read = list_ or export_file is not None  # these work on a read-only store too
    with ReviewSession.open(out, reviewer=reviewer, to_read=to_read) as session:
        if list_:
            _list(session, out, page)
        elif approve:
            session.check_waiting(ids)  # all of them, before deciding any
            for item_id in ids:
                session.approve(item_id)
            click.echo(f"approved {len(ids)}; go on with: chainfleet resume {out}")
        elif reject_id is not None:
            assert note is not None
            decision = session.reject(reject_id, note, from_stage=from_stage)
            click.echo(
                f"rejected {reject_id}: it re-runs from {decision.from_stage} with your note; "
                f"go on with: chainfleet resume {out}"
            )
        elif approve_all:
            entries = session.select(where) if where else session.waiting()
            for entry in entries:
                session.approve(entry.item_id, qid=entry.qid)
            click.echo(f"approved {len(entries)}" + (f" matching {where!r}" if where else ""))
        elif export_file is not None:
            count = session.export(export_file)
            click.echo(f"wrote {count} decisions to {export_file}")
        elif web:
            from chainfleet.review.web import serve

            serve(session, port=port)
        else:
            from chainfleet.review.terminal import interact

            interact(session)


def _list(session: ReviewSession, out: str, page: int) -> None:
    """One page (``LIST_PAGE`` entries) of the queue, and the command for the next one."""
    total = session.waiting_count()
    entries = session.waiting(offset=(page - 1) * LIST_PAGE, limit=LIST_PAGE)
    if not total:
        click.echo("nothing waits for review")
        return
    if not entries:
        raise ConfigError(f"--page {page} is past the end: {total:,} wait, {LIST_PAGE} a page")
    click.echo(f"{total:,} waiting for review:")
    width = max(len(e.item_id) for e in entries)
    for entry in entries:
        quality = f"{entry.quality:.0f}" if entry.quality is not None else "-"
        click.echo(f"  {entry.item_id:<{width}}  {entry.stage:<12} quality {quality:>3}  {entry.reason}")
    first = (page - 1) * LIST_PAGE + 1
    if total > LIST_PAGE:
        last = first + len(entries) - 1
        more = f"; next: chainfleet review {out} --list --page {page + 1}" if last < total else ""
        click.echo(f"items {first:,}-{last:,} of {total:,}{more}")
