"""The command door's child processes: a command template filled per item, run, and judged.

``chainfleet exec -i topics.txt -- python my_chain.py "{topic}"`` runs the command once per
item. This module is everything about that command except the model calls it makes (those go
through the local proxy, :mod:`chainfleet.code.proxy`):

- :class:`CommandTemplate` is the command as given. :meth:`CommandTemplate.parse` checks it
  before anything runs: an empty command, a program found neither on ``PATH`` nor as a path,
  an ``--output-file`` pattern that is empty, are one-line :class:`~chainfleet.errors.ConfigError`
  (exit 2). :meth:`~CommandTemplate.check_fields` checks every ``{field}`` placeholder against
  the input's fields, with a did-you-mean.
- A placeholder is ``{name}`` (letters, digits, ``_``, ``-``, ``.``); anything else in braces
  is left as it is, so JSON, awk programs and shell syntax in an argument need no escaping.
  ``{{name}}`` is the literal text ``{name}``. ``{id}`` is always the item's id. Each filled
  argument goes to the program as one argv entry, never through a shell: a topic holding
  ``; rm -rf ~`` is a topic.
- :func:`run_child` starts the program in its own process group (so the terminal's Ctrl-C
  reaches chainfleet alone, which decides what the children do), optionally writes the item's
  JSON to its stdin, collects stdout and stderr, and on a timeout or a cancellation ends the
  whole group: SIGTERM, a grace period, then SIGKILL.
- :func:`judge` turns a finished child into the item's output or its error: exit 0 is success
  (the output is stdout, or the file ``--output-file`` names); anything else is
  :class:`CommandFailed` with the exit code and the tail of stderr.

Example::

    template = CommandTemplate.parse(["python", "chain.py", "{topic}"])
    template.check_fields(frozenset({"topic"}), where="topics.txt")
    argv = template.fill({"topic": "solar power"}, item_id="1")
    child = await run_child(argv, env=os.environ, stdin=None, timeout=60)
    output = judge(child, output_file=None)
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import errno
import json
import os
import re
import shlex
import shutil
import signal
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chainfleet.code.proxy import Proxy, child_env
from chainfleet.errors import CallError, ConfigError
from chainfleet.inputs import InputSource, open_input
from chainfleet.redact import clip

if TYPE_CHECKING:
    from chainfleet.code.fleet import Fleet

__all__ = [
    "ChildResult",
    "CommandFailed",
    "CommandTemplate",
    "CommandTimedOut",
    "CommandWork",
    "judge",
    "open_items",
    "run_child",
    "stderr_tail",
]

#: ``{name}`` fills in a field; ``{{name}}`` is the literal ``{name}``
PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][\w.-]*)\}\}|\{([A-Za-z_][\w.-]*)\}")

#: how long a child has between SIGTERM and SIGKILL when it must end
GRACE_SECONDS = 2.0

#: the lines of stderr a failed item's error keeps (the item's log keeps all of it)
TAIL_LINES = 5


class CommandFailed(CallError):
    """The item's command exited with a code other than 0 (``status`` is the exit code, or
    minus the signal that ended it); the message ends with the tail of its stderr."""

    kind = "command_failed"


class CommandTimedOut(CommandFailed):
    """The item's command ran past ``--timeout`` and was ended."""

    kind = "command_timeout"


@dataclass(frozen=True, slots=True)
class CommandTemplate:
    """A command with ``{field}`` placeholders, checked and ready to fill per item."""

    argv: tuple[str, ...]

    @classmethod
    def parse(cls, argv: Collection[str], *, cwd: str | None = None) -> CommandTemplate:
        """Check the command before anything runs: not empty, its program found (a relative
        path is taken from ``cwd``, where the children will start)."""
        words = tuple(argv)
        if not words or not words[0].strip():
            raise ConfigError(
                "no command given: put it after --, "
                "e.g. chainfleet exec -i topics.txt -- ./chain.sh '{topic}'"
            )
        program = words[0]
        if PLACEHOLDER.search(program):
            raise ConfigError(f"the program itself cannot be a placeholder: {clip(program, 80)!r}")
        if find_program(program, cwd=cwd) is None:
            where = "no such file" if os.sep in program else "not on PATH"
            raise ConfigError(f"command not found: {clip(program, 80)!r} ({where})")
        return cls(words)

    def placeholders(self) -> list[str]:
        """The field names the template fills, each once, in order of appearance."""
        return placeholders_in(self.argv)

    def check_fields(self, fields: Collection[str], *, where: str, extra: Collection[str] = ()) -> None:
        """Every placeholder must name one of ``fields`` (or ``id``, or one of ``extra``:
        another template such as the ``--output-file`` pattern), else one ConfigError."""
        known = {*fields, "id"}
        for name in [*self.placeholders(), *placeholders_in(extra)]:
            if name not in known:
                raise ConfigError(unknown_field(name, known), where=where)

    def fill(self, fields: Mapping[str, Any], *, item_id: str) -> list[str]:
        """The argv for one item: each placeholder replaced by its field as text."""
        return [fill_text(word, fields, item_id=item_id) for word in self.argv]


def placeholders_in(words: Collection[str]) -> list[str]:
    """The ``{field}`` names in ``words``, each once, in order (escaped ``{{name}}`` are not)."""
    names: dict[str, None] = {}
    for word in words:
        for match in PLACEHOLDER.finditer(word):
            if match.group(2):
                names[match.group(2)] = None
    return list(names)


def fill_text(text: str, fields: Mapping[str, Any], *, item_id: str) -> str:
    """``text`` with each ``{field}`` replaced: strings as they are, other JSON values as JSON."""

    def value(match: re.Match[str]) -> str:
        if match.group(1):
            return "{" + match.group(1) + "}"
        name = match.group(2)
        found = fields.get(name, item_id if name == "id" else None)
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

    return PLACEHOLDER.sub(value, text)


def unknown_field(name: str, known: Collection[str]) -> str:
    """One line for a placeholder that names no field, with a did-you-mean."""
    hint = difflib.get_close_matches(name, sorted(known), n=1)
    did = f" (did you mean {{{hint[0]}}}?)" if hint else ""
    listed = ", ".join(f"{{{field}}}" for field in sorted(known))
    return f"placeholder {{{clip(name, 80)}}} names no field of the input{did}; the fields are {listed}"


def find_program(program: str, *, cwd: str | None = None) -> str | None:
    """The program's path: a path as given (an executable file; a relative one from ``cwd``),
    else on PATH."""
    if os.sep in program or (os.altsep and os.altsep in program):
        path = Path(cwd or ".") / program
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(program)


@dataclass(frozen=True, slots=True)
class ChildResult:
    """How one child ended: its exit code (minus the signal that ended it), its output, and
    whether chainfleet ended it for running past its timeout."""

    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


async def run_child(
    argv: list[str],
    *,
    env: Mapping[str, str],
    stdin: bytes | None,
    timeout: float | None,
    cwd: str | None = None,
) -> ChildResult:
    """Run one child to its end and collect what it wrote.

    The child gets its own session (process group): the terminal's Ctrl-C reaches chainfleet
    only, and a timeout or a cancellation (the second Ctrl-C) ends the child and everything it
    started. Cancellation ends the group and is then re-raised. A program that cannot be
    started (a script without ``#!``, a file gone since the check) is :class:`CommandFailed`."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        hint = " (a script needs a #! line, e.g. #!/bin/sh)" if exc.errno == errno.ENOEXEC else ""
        raise CommandFailed(f"the command could not be started: {exc.strerror or exc}{hint}") from None
    talk = asyncio.ensure_future(process.communicate(stdin))
    try:
        stdout, stderr = await asyncio.wait_for(asyncio.shield(talk), timeout)
    except asyncio.TimeoutError:
        await end_group(process)
        stdout, stderr = await talk
        return ChildResult(_code(process.returncode), stdout, stderr, timed_out=True)
    except asyncio.CancelledError:
        await end_group(process)
        with contextlib.suppress(Exception):
            await talk
        raise
    return ChildResult(_code(process.returncode), stdout, stderr)


async def end_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the child's whole process group, then SIGKILL after :data:`GRACE_SECONDS`."""
    for sig, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), wait)
            # the child is gone, but what it started may linger in the group: end those too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            return
        except asyncio.TimeoutError:
            continue


def _code(returncode: int | None) -> int:
    return -1 if returncode is None else returncode


def stderr_tail(stderr: bytes, lines: int = TAIL_LINES) -> str:
    """The last non-blank ``lines`` of stderr as one line (`` | `` between them), clipped."""
    text = stderr.decode("utf-8", errors="replace")
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return clip(" | ".join(kept), 500)


def judge(child: ChildResult, *, output_file: str | None, timeout: float | None = None) -> str:
    """The item's output if the child succeeded (exit 0): its stdout, or the file
    ``output_file`` (already filled for the item); else raise :class:`CommandFailed`."""
    tail = stderr_tail(child.stderr)
    said = f"; stderr: {tail}" if tail else "; stderr was empty"
    if child.timed_out:
        limit = f" of {timeout:g} s" if timeout is not None else ""
        raise CommandTimedOut(
            f"the command ran past its timeout{limit} and was ended{said}", status=child.returncode
        )
    if child.returncode != 0:
        how = f"exited with code {child.returncode}"
        if child.returncode < 0:
            with contextlib.suppress(ValueError):
                how = f"was ended by {signal.Signals(-child.returncode).name}"
        raise CommandFailed(f"the command {how}{said}", status=child.returncode)
    if output_file is None:
        return child.stdout.decode("utf-8", errors="replace")
    try:
        return Path(output_file).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CommandFailed(
            f"the command exited with 0 but its --output-file {clip(output_file, 200)!r} "
            f"cannot be read: {exc.strerror or exc}",
            status=0,
        ) from None


def open_items(template: CommandTemplate, input_file: str, *, output_file: str | None) -> InputSource:
    """The input for ``template``, every placeholder checked against its fields (exit 2 before
    anything runs). A text file's line becomes the field the command names first (``{topic}``
    on topics.txt), or ``input`` when it names none."""
    named = [name for name in placeholders_in([*template.argv, output_file or ""]) if name != "id"]
    source = open_input(input_file, input_field=named[0] if named else "input")
    extra = [output_file] if output_file else []
    if source.format == "txt" and len(named) > 1:
        try:
            template.check_fields(source.fields or (), where=input_file, extra=extra)
        except ConfigError as exc:
            more = f"; a text file's line is the one field {{{named[0]}}}: use CSV or JSONL for more"
            raise ConfigError(exc.reason + more, where=input_file) from None
    elif source.fields is not None:
        template.check_fields(source.fields, where=input_file, extra=extra)
    else:  # JSONL: the first object says which fields there are, with a did-you-mean
        first = next(iter(source), None)
        if first is not None:
            template.check_fields(first.fields, where=f"{input_file}:{first.line}", extra=extra)
    source.scan(required=named)
    return source


@dataclass(frozen=True, kw_only=True)
class CommandWork:
    """The command door's work for one item: start the child with the proxy's base URLs for
    the item's token, wait for it, keep its whole stderr in the item's log, and return its
    output (or raise :class:`CommandFailed`).

    ``stdin`` gives the child the item's fields as one JSON object on its standard input;
    ``output_file`` is a pattern (``out/{id}.md``) naming the file that holds the output;
    ``timeout`` (seconds) ends a child that runs longer; ``cwd`` is where children start."""

    template: CommandTemplate
    proxy: Proxy
    stdin: bool = False
    output_file: str | None = None
    timeout: float | None = None
    cwd: str | None = None

    async def run_item(self, item: dict[str, Any], fleet: Fleet) -> str:
        """The work function the runner calls (``async def work(item: dict, fleet)``); the
        item's log is the run store's (``logs/`` in the output folder)."""
        scope, it = fleet.scope, fleet.item

        def log(text: str) -> None:
            scope.ctx.store.journal.log(scope.ctx.run_id, it.index, it.id, text)

        return await self.run(item, it.id, scope, log=log)

    async def run(
        self, fields: Mapping[str, Any], item_id: str, scope: Any, *, log: Callable[[str], None] | None = None
    ) -> str:
        """Run the child for one item whose calls are ``scope``'s; ``log`` gets its stderr."""
        argv = self.template.fill(fields, item_id=item_id)
        data = json.dumps(fields, ensure_ascii=False).encode() if self.stdin else None
        env = child_env(os.environ, {})
        with self.proxy.admit(scope) as proxied:
            env.update(proxied)
            child = await run_child(argv, env=env, stdin=data, timeout=self.timeout, cwd=self.cwd)
        if log is not None and (child.stderr or child.returncode != 0 or child.timed_out):
            log(log_text(argv, child))
        output_file = None
        if self.output_file:  # a relative pattern is where the child wrote it: under its cwd
            output_file = str(Path(self.cwd or ".") / fill_text(self.output_file, fields, item_id=item_id))
        return judge(child, output_file=output_file, timeout=self.timeout)


def log_text(argv: list[str], child: ChildResult) -> str:
    """What the item's log keeps of one child: the command as run, how it ended, all its stderr."""
    ended = "timed out and was ended" if child.timed_out else f"exit code {child.returncode}"
    stderr = child.stderr.decode("utf-8", errors="replace")
    return f"$ {shlex.join(argv)}\n# {ended}; stderr:\n{stderr}"
