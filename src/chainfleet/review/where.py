"""``--approve-all --where 'quality >= 80'``: a filter over queued outputs, evaluated safely.

The expression is a Jinja2 expression compiled in Jinja2's sandbox, never Python's ``eval``:
it can compare and combine the names below but cannot reach attributes of Python objects,
import, or call anything unsafe. Names: ``quality`` (0-100), ``id``, ``stage``, ``reason``,
``output``, ``words`` (the output's word count), ``checks`` (the gate results) and ``input``
(the item's fields).

Example::

    matches = compile_where("quality >= 80 and stage == 'edit'")
    matches(entry)  # True or False
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chainfleet.store.review_queue import Entry, ReviewError

__all__ = ["compile_where"]

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined)  # a misspelt name is an error


def compile_where(expression: str) -> Callable[[Entry], bool]:
    """A predicate over queue entries; ``ReviewError`` (exit 2) for an expression that does
    not parse or breaks the sandbox's rules."""
    try:
        compiled = _ENV.compile_expression(expression, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ReviewError(f"not a valid expression: {exc.message}", where="--where") from exc

    def matches(entry: Entry) -> bool:
        try:
            return bool(compiled(**_names(entry)))
        except (SecurityError, UndefinedError, TypeError) as exc:
            raise ReviewError(f"cannot evaluate {expression!r}: {exc}", where="--where") from exc

    matches(_PROBE)  # a misspelt name or a forbidden attribute fails now, even on an empty queue
    return matches


_PROBE = Entry(
    qid=0,
    run_id="",
    index=0,
    item_id="",
    stage="",
    reason="",
    output="",
    checks={},
    quality=0.0,
    queued=0.0,
    state="waiting",
    input={},
)


def _names(entry: Entry) -> dict[str, Any]:
    return {
        "quality": entry.quality if entry.quality is not None else 0,
        "id": entry.item_id,
        "stage": entry.stage,
        "reason": entry.reason,
        "output": entry.output,
        "words": len(entry.output.split()),
        "checks": entry.checks,
        "input": entry.input or {},
    }
