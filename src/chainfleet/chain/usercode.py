"""Calling the user's own code: a gate's ``check:`` function or a tool step.

The user's function is plain Python and may raise anything. :func:`call_user` is the one place
it is called from a chain: any exception that is not a chainfleet ``CallError`` (which the user
may raise on purpose, e.g. ``RateLimited``) becomes a :class:`UserCodeError` for that item and
stage, so the item fails with ``TypeName: message`` and the other items go on.

Example::

    reason = await call_user(check.function, output, stage="write", what="gate check 'no_dates'")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from chainfleet.errors import CallError, PermanentError
from chainfleet.redact import clip

__all__ = ["CheckError", "ToolError", "UserCodeError", "call_user"]


class UserCodeError(PermanentError):
    """The user's function raised something other than a chainfleet error: the item fails."""

    kind = "user_error"


class ToolError(UserCodeError):
    """A tool step raised, or returned something other than text."""

    kind = "tool_error"


class CheckError(UserCodeError):
    """A gate's ``check:`` function raised."""

    kind = "check_error"


async def call_user(
    fn: Callable[..., Any],
    *args: Any,
    stage: str,
    what: str = "",
    error: type[UserCodeError] = UserCodeError,
) -> Any:
    """``fn(*args)``, awaited if it gives an awaitable; an exception of the user's code is raised
    again as ``error`` naming ``stage``, with ``what`` (e.g. ``gate check 'x'``) before
    ``TypeName: message``. Cancellation and chainfleet's own call errors pass through."""
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
    except CallError:
        raise
    except Exception as exc:  # the user's own bug or failure: this item fails, the others go on
        prefix = f"{what}: " if what else ""
        raise error(f"{prefix}{type(exc).__name__}: {clip(exc, 500)}", stage=stage) from exc
    return result
