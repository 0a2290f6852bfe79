"""The interactive terminal reviewer (rich): the queue, then one item at a time.

Keys: ``a`` approve, ``e`` edit in ``$EDITOR`` (the stage's gate checks the edit again; a
refused edit is kept for another try and nothing is stored), ``r`` reject with a note and the
stage to go back to, ``s`` skip, ``u`` undo this session's last decision, ``q`` quit.
"""

from __future__ import annotations

import json
import sys
from collections import deque

import click
from rich.console import Console, Group
from rich.panel import Panel
from rich.pretty import Pretty
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from chainfleet.errors import ConfigError
from chainfleet.review.session import EditRefused, ReviewSession, is_json
from chainfleet.store.review_queue import Entry, ReviewError

__all__ = ["interact"]

KEYS = "[a]pprove  [e]dit  [r]eject  [s]kip  [u]ndo  [q]uit"


def interact(session: ReviewSession, console: Console | None = None) -> None:
    """Review every waiting item of ``session`` at the terminal."""
    if not sys.stdin.isatty():
        raise ConfigError("not a terminal: use --list, --approve, --reject or --approve-all in scripts")
    console = console or Console(highlight=False)
    entries = session.waiting()
    if not entries:
        console.print("nothing waits for review")
        return
    console.print(queue_table(entries))
    pending = deque(entries)
    number = {entry.item_id: place for place, entry in enumerate(entries, 1)}  # its place, kept
    while pending:
        entry = pending[0]
        place = number.get(entry.item_id, len(entries))
        console.print(entry_panel(entry, place, len(entries), note=earlier_note(session, entry)))
        console.print(KEYS, markup=False)
        key = click.getchar().lower()
        if key == "q":
            break
        if key == "s":
            again = len(pending) > 1
            pending.rotate(-1) if again else pending.popleft()
            console.print(
                f"skipped {entry.item_id}: it waits" + ("; it comes round again" if again else ""),
                markup=False,
            )
            continue
        if key == "u":
            _undo(session, pending, console)
            continue
        if key in "aer" and _act(session, entry, key, console):
            pending.popleft()
    console.print(
        f"{len(session.made)} decided here; go on with: chainfleet resume {session.folder}", markup=False
    )


def _act(session: ReviewSession, entry: Entry, key: str, console: Console) -> bool:
    """Make one decision; True when the entry is done with (decided, or decided by someone else)."""
    try:
        if key == "a":
            session.approve(entry.item_id, qid=entry.qid)
            console.print(f"approved {entry.item_id}", markup=False)
        elif key == "e":
            return _edit(session, entry, console)
        else:
            return _reject(session, entry, console)
    except ReviewError as exc:
        console.print(Text(str(exc), style="bold"))
    return True


def _edit(session: ReviewSession, entry: Entry, console: Console) -> bool:
    text = entry.output
    while True:
        edited = click.edit(text, extension=".json" if is_json(text) else ".md", require_save=True)
        if edited is None or edited == entry.output:
            console.print("no change: nothing stored")
            return False
        try:
            session.edit(entry.item_id, edited, qid=entry.qid)
        except EditRefused as exc:
            console.print(Text(f"the edit breaks the stage's contract: {exc.reason}", style="bold"))
            console.print(
                "your edit is kept: [e] edit it again, any other key to leave it unstored", markup=False
            )
            if click.getchar().lower() != "e":
                return False
            text = edited
            continue
        console.print(f"edited {entry.item_id}", markup=False)
        return True


def _reject(session: ReviewSession, entry: Entry, console: Console) -> bool:
    note = click.prompt("note for the stage ({{ feedback }})", default="", show_default=False).strip()
    if not note:
        console.print("a rejection needs a note: nothing stored")
        return False
    order = session.stages_order
    choices = order[: order.index(entry.stage) + 1] if entry.stage in order else [entry.stage]
    stage = click.prompt("re-run from stage", type=click.Choice(choices), default=entry.stage)
    session.reject(entry.item_id, note, from_stage=stage, qid=entry.qid)
    console.print(f"rejected {entry.item_id}: it re-runs from {stage}", markup=False)
    return True


def _undo(session: ReviewSession, pending: deque[Entry], console: Console) -> None:
    try:
        entry = session.undo()
    except ReviewError as exc:
        console.print(Text(str(exc), style="bold"))
        return
    entry.input = next((e.input for e in pending if e.item_id == entry.item_id), entry.input)
    pending.appendleft(entry)
    console.print(f"undone: {entry.item_id} waits again", markup=False)


def queue_table(entries: list[Entry]) -> Table:
    table = Table(title=f"{len(entries)} waiting for review")
    for column in ("id", "stage", "quality", "why"):
        table.add_column(column, justify="right" if column == "quality" else "left")
    for entry in entries:
        quality = f"{entry.quality:.0f}" if entry.quality is not None else "-"
        table.add_row(entry.item_id, entry.stage, quality, entry.reason)
    return table


def earlier_note(session: ReviewSession, entry: Entry) -> str | None:
    """The note of the latest rejection that sent this item back, when it waits again after
    re-running (the reviewer reads what was asked beside what came back); else None."""
    order = session.stages_order
    stages = order[: order.index(entry.stage) + 1] if entry.stage in order else [entry.stage]
    found = [f for stage in stages if (f := session.queue.feedback(entry.item_id, stage)) is not None]
    return max(found)[1] or None if found else None


def entry_panel(entry: Entry, number: int, total: int, *, note: str | None = None) -> Panel:
    """One item: its input, the stage's output (JSON pretty-printed), gate results, quality,
    and why it waits (with ``note``, the reviewer's note of the rejection it came back from)."""
    parts: list[object] = [Text("input", style="bold"), Pretty(entry.input or {})]
    parts += [Text(f"output of {entry.stage}", style="bold"), _output(entry.output)]
    checks = ", ".join(f"{k}: {v}" for k, v in entry.checks.items()) or "none"
    quality = f"{entry.quality:.0f}/100" if entry.quality is not None else "-"
    why = entry.reason + (f"; sent back before with the note: {note}" if note else "")
    parts.append(Text(f"gates: {checks}   quality: {quality}   why: {why}"))
    title = f"{number}/{total}  item {entry.item_id}  at {entry.stage}"
    return Panel(Group(*parts), title=title, title_align="left")  # type: ignore[arg-type]


def _output(text: str) -> object:
    if is_json(text):
        return Syntax(json.dumps(json.loads(text), indent=2, ensure_ascii=False), "json", word_wrap=True)
    return Text(text)
