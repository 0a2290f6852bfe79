"""One reviewer working on one output folder: the actions the terminal, the script flags and
the web page share (approve, edit, reject, undo, export), with their checks.

Example::

    with ReviewSession.open("runs/today", reviewer="ana") as session:
        for entry in session.waiting():
            session.approve(entry.item_id)
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chainfleet.errors import ConfigError, InvalidOutput
from chainfleet.pipeline.usercode import UserCodeError
from chainfleet.review.where import compile_where
from chainfleet.store.review_queue import Decision, Entry, ReviewError, ReviewQueue
from chainfleet.store.runstore import RunStore, StoreError, cannot_write

__all__ = ["EditRefused", "ReviewSession", "default_reviewer", "is_json"]


class EditRefused(ReviewError):
    """An edited output the stage's contract or gate refuses: nothing was stored."""


def default_reviewer() -> str:
    """The OS user's name (``--reviewer`` overrides it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return os.environ.get("USER") or "reviewer"


def is_json(text: str) -> bool:
    """Whether an output is a JSON object or array: the terminal and the web page show it
    indented, and an edit of it opens as a ``.json`` file."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


class ReviewSession:
    """The review queue of one output folder, opened on the reviewer's own connection."""

    def __init__(self, store: RunStore, *, reviewer: str, folder: Path) -> None:
        self.store = store
        self.queue = ReviewQueue(store.db)
        self.reviewer = reviewer
        self.folder = folder
        runs = store.runs()
        if not runs:
            raise ConfigError("no run here: the store holds none", where=str(folder))
        last = runs[-1]
        self.stages_order: list[str] = list((last["summary"] or {}).get("stages_order") or [])
        self._pipeline_file: str | None = next(
            (
                r["settings"].get("pipeline_file")
                for r in reversed(runs)
                if r["settings"].get("pipeline_file")
            ),
            None,
        )
        self._pipeline: Any = None
        #: decisions made in this session, for undo
        self.made: list[Decision] = []
        if not self.stages_order:  # a run still going (or killed) saved no summary yet
            self.stages_order = [stage.name for stage in self._stages()]

    @classmethod
    def open(
        cls, folder: str | os.PathLike[str], *, reviewer: str | None = None, to_read: bool = False
    ) -> ReviewSession:
        """Open ``folder``'s run store; exit-2 ``ConfigError`` when it holds no run, or when it
        cannot be written (a read-only mount, no permission) and the session decides: only a
        session ``to_read`` (``--list``, ``--export``) works on a read-only store."""
        path = Path(folder) / "run.db"
        if not path.is_file():
            raise ConfigError("no run here (no run.db): give the --out folder of a run", where=str(folder))
        why = cannot_write(path)
        if why is not None and not to_read:
            raise ConfigError(
                f"{why}; a review writes its decisions there (--list and --export only read it)",
                where=str(path),
            )
        try:
            store = RunStore.open_to_read(path) if to_read else RunStore.open(path)
        except StoreError as exc:
            raise ConfigError(f"{exc}; nothing was changed", where=str(path)) from exc
        store.db.execute("PRAGMA busy_timeout = 10000")  # another reviewer may be writing
        try:
            return cls(store, reviewer=reviewer or default_reviewer(), folder=Path(folder))
        except ConfigError:
            store.close()
            raise

    def __enter__(self) -> ReviewSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- reading ---------------------------------------------------------------------------------

    def waiting(self, *, offset: int = 0, limit: int | None = None) -> list[Entry]:
        """The waiting entries, in input order; or one page of them."""
        return self.queue.waiting(offset=offset, limit=limit)

    def waiting_count(self) -> int:
        return self.queue.waiting_count()

    def select(self, where: str) -> list[Entry]:
        """The waiting entries matching a ``--where`` expression."""
        matches = compile_where(where)
        return [entry for entry in self.waiting() if matches(entry)]

    def stage_after(self, stage: str) -> str | None:
        """The stage the item goes on to once ``stage`` is approved."""
        if stage in self.stages_order:
            at = self.stages_order.index(stage)
            return self.stages_order[at + 1] if at + 1 < len(self.stages_order) else None
        return None

    # -- deciding --------------------------------------------------------------------------------

    def check_waiting(self, ids: Iterable[str]) -> list[Entry]:
        """Every id waiting, or ``ReviewError`` naming the first that is not (nothing changed)."""
        return [self.queue.find_waiting(item_id) for item_id in ids]

    def approve(self, item_id: str, *, qid: int | None = None, reviewer: str | None = None) -> Decision:
        who = reviewer or self.reviewer
        return self._made(self.queue.decide(item_id, "approve", reviewer=who, qid=qid))

    def edit(
        self, item_id: str, text: str, *, qid: int | None = None, reviewer: str | None = None
    ) -> Decision:
        """Approve with the reviewer's text; the stage's contract is checked again first."""
        entry = self.queue.get(qid) if qid is not None else self.queue.find_waiting(item_id)
        if entry is None:
            raise ReviewError("no such item in the review queue", where=item_id)
        problem = self.check_edit(entry.stage, text)
        if problem:
            raise EditRefused(problem, where=f"{item_id} ({entry.stage})")
        who = reviewer or self.reviewer
        decision = self.queue.decide(item_id, "edit", reviewer=who, after=text, qid=entry.qid)
        return self._made(decision)

    def reject(
        self,
        item_id: str,
        note: str,
        *,
        from_stage: str | None = None,
        qid: int | None = None,
        reviewer: str | None = None,
    ) -> Decision:
        """Send the item back to ``from_stage`` (default: the reviewed one) with ``note``."""
        entry = self.queue.get(qid) if qid is not None else self.queue.find_waiting(item_id)
        if entry is None:
            raise ReviewError("no such item in the review queue", where=item_id)
        if not note.strip():
            raise ReviewError("a rejection needs a note (it becomes {{ feedback }})", where=item_id)
        if from_stage is not None:
            self._check_from(entry, from_stage)
        decision = self.queue.decide(
            item_id,
            "reject",
            reviewer=reviewer or self.reviewer,
            note=note,
            from_stage=from_stage,
            qid=entry.qid,
        )
        return self._made(decision)

    def _check_from(self, entry: Entry, from_stage: str) -> None:
        """``--from`` names the reviewed stage or one before it."""
        order = self.stages_order
        if from_stage == entry.stage or entry.stage not in order:
            return
        allowed = order[: order.index(entry.stage) + 1]
        if from_stage not in allowed:
            raise ReviewError(
                f"--from {from_stage!r} is not the reviewed stage or one before it: {', '.join(allowed)}",
                where=entry.item_id,
            )

    def undo(self) -> Entry:
        """Take this session's last decision back."""
        if not self.made:
            raise ReviewError("nothing to undo in this session")
        entry = self.queue.undo(self.made[-1].did)
        self.made.pop()
        return entry

    def _made(self, decision: Decision) -> Decision:
        self.made.append(decision)
        return decision

    def check_edit(self, stage: str, text: str) -> str | None:
        """Why the stage's contract or gate refuses ``text``, or None when it passes."""
        found = self._stage(stage)
        if found is None:
            return None
        value: Any = text
        if found.contract is not None:
            value, problem = found.contract.check(text)
            if problem:
                return f"does not match the stage's output schema: {problem}"
        try:
            found.check_output(value)
        except (InvalidOutput, UserCodeError) as exc:  # a check that raised refuses the edit
            return exc.message
        return None

    def _stage(self, name: str) -> Any:
        return next((s for s in self._stages() if s.name == name), None)

    def _stages(self) -> list[Any]:
        """The stages of the run's pipeline file (none when the run was not started from one)."""
        if self._pipeline is None and self._pipeline_file and Path(self._pipeline_file).is_file():
            from chainfleet.pipeline import Pipeline

            self._pipeline = Pipeline.from_yaml(self._pipeline_file)
        return list(self._pipeline.stages) if self._pipeline is not None else []

    # -- export ----------------------------------------------------------------------------------

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every decision ever made here as JSON lines; returns how many."""
        count = 0
        tmp = Path(str(path) + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for decision in self.queue.decisions():
                out.write(json.dumps(decision.to_json(), ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
        return count
