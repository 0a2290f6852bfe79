"""The user's own code, called so that what it raises fails one item, never the run.

A gate's ``check:`` function and a tool step are plain Python and may raise anything. Every
call of one goes through :func:`call_user` here (the review's edit check, synchronous) or
:func:`chainfleet.chain.usercode.call_user` (a chain's, awaited), which share
:func:`as_user_error`: an exception that is not a chainfleet ``CallError`` (which the user may
raise on purpose, e.g. ``RateLimited``) becomes a :class:`UserCodeError` for that item and
stage, ``TypeName: message``.

Example::

    reason = call_user(check.function, output, stage="write", what="gate check 'no_dates'")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chainfleet.errors import CallError, PermanentError
from chainfleet.redact import clip

__all__ = ["CheckError", "ToolError", "UserCodeError", "as_user_error", "call_user"]


class UserCodeError(PermanentError):
    """The user's function raised something other than a chainfleet error: the item fails."""

    kind = "user_error"


class ToolError(UserCodeError):
    """A tool step raised, or returned something other than text."""

    kind = "tool_error"


class CheckError(UserCodeError):
    """A gate's ``check:`` function raised."""

    kind = "check_error"


def as_user_error(exc: Exception, *, stage: str, what: str, error: type[UserCodeError]) -> UserCodeError:
    """``exc``, raised by the user's code, as ``error`` naming ``stage``: ``what`` (e.g.
    ``gate check 'x'``) before ``TypeName: message``."""
    prefix = f"{what}: " if what else ""
    return error(f"{prefix}{type(exc).__name__}: {clip(exc, 500)}", stage=stage)


def call_user(
    fn: Callable[..., Any],
    *args: Any,
    stage: str,
    what: str = "",
    error: type[UserCodeError] = UserCodeError,
) -> Any:
    """``fn(*args)`` for a plain (not ``async``) function; what it raises is raised again as
    ``error`` (see :func:`as_user_error`). Chainfleet's own call errors pass through."""
    try:
        return fn(*args)
    except CallError:
        raise
    except Exception as exc:  # the user's own bug or failure: this item fails, the others go on
        raise as_user_error(exc, stage=stage, what=what, error=error) from exc
