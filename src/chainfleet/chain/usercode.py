"""Calling the user's own code: a gate's ``check:`` function or a tool step.

The user's function is plain Python and may raise anything. :func:`call_user` is the one place
it is called from a chain: any exception that is not a chainfleet ``CallError`` (which the user
may raise on purpose, e.g. ``RateLimited``) becomes a :class:`UserCodeError` for that item and
stage, so the item fails with ``TypeName: message`` and the other items go on. (The errors and
the synchronous twin used when a reviewer's edit is checked live in
:mod:`chainfleet.pipeline.usercode`, below the chain, so both say it the same way.)

Example::

    reason = await call_user(check.function, output, stage="write", what="gate check 'no_dates'")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from chainfleet.errors import CallError
from chainfleet.pipeline.usercode import CheckError, ToolError, UserCodeError, as_user_error

__all__ = ["CheckError", "ToolError", "UserCodeError", "call_user"]


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
        raise as_user_error(exc, stage=stage, what=what, error=error) from exc
    return result
