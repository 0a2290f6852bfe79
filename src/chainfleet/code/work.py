"""One item of the user's own chain: run its function, keep its output, or fail only that item.

A backend hands each admitted chain of a code pipeline (:meth:`Pipeline.from_function`) to
:class:`CodeWork`, which

1. makes the item's :class:`~chainfleet.code.gateway.ItemScope` and its ``fleet``
   (:class:`~chainfleet.code.fleet.Fleet`), and sets the scope in the context variable the
   transport reads (:data:`~chainfleet.code.transport.CURRENT`), so every call the function
   makes, from any client and any task it starts, is this item's;
2. awaits ``fn(item, fleet)`` from the top (a run that goes again replays the journal);
3. keeps the return value as the item's output, stored as JSON, checked against the pipeline's
   ``output=`` contract when there is one;
4. or, when the function raises, fails only this item: a chainfleet error (found in the
   exception or what caused it, or the call the gateway gave up on) keeps its kind; anything
   else is ``code_error`` with the exception's message and its last frame, and the whole
   traceback goes to the item's log.

What the function is given as its item: the whole fields dict when its first parameter is
annotated as a dict (``item: dict``), else the value of the field named like the parameter
(``topic``), else the only field's value, else the dict.

A work function made by another door (``chainfleet exec``) is any ``async def work(item,
fleet)``: the same runner, scope and gateway run it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chainfleet.chain.usercode import UserCodeError
from chainfleet.code.fleet import Fleet, ItemParked
from chainfleet.code.gateway import Gateway, ItemScope
from chainfleet.code.transport import CURRENT
from chainfleet.errors import CallError, FatalError, InvalidOutput
from chainfleet.redact import clip

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext
    from chainfleet.chain.progress import Chain

__all__ = ["CodeError", "CodeWork", "code_error"]


class CodeError(UserCodeError):
    """The user's chain raised something other than a chainfleet error: its item fails."""

    kind = "code_error"


class CodeWork:
    """Runs the items of one code pipeline for one run (see the module docstring)."""

    def __init__(self, ctx: RunContext, gateway: Gateway | None = None) -> None:
        self.ctx = ctx
        pipeline = ctx.pipeline
        self.fn: Callable[..., Any] = pipeline.work
        self.stage = pipeline.stages[0]
        self.gateway = gateway or Gateway(ctx)
        self.whole_item = _takes_dict(self.fn)

    def argument(self, chain: Chain) -> Any:
        """What the function gets as its item (see the module docstring)."""
        fields = dict(chain.item.fields)
        if self.whole_item:
            return fields
        name = self.ctx.pipeline.input
        if name in fields:
            return fields[name]
        if len(fields) == 1:
            return next(iter(fields.values()))
        return fields

    async def advance(self, chain: Chain) -> None:
        """Run the item's function from the top; record its output, where it waits for a
        person, or its error (a fatal one on the run too). Never raises for the item."""
        scope = ItemScope(self.ctx, chain, self.gateway)
        token = CURRENT.set(scope)
        before, started = chain.seconds, self.ctx.clock.now()
        try:
            value = await self.fn(self.argument(chain), Fleet(scope))
        except ItemParked as parked:
            chain.parked = parked.stage
            return
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # the user's code: this item fails, the others go on
            self._fail(chain, scope, exc)
            return
        finally:
            CURRENT.reset(token)
            # the item's time is its whole run (its code, its processes, its calls): what one
            # at a time would take for it (the report's estimate sums these)
            chain.seconds = before + max(0.0, self.ctx.clock.now() - started)
        try:
            await self._keep(chain, value)
        except CallError as exc:
            self._fail(chain, scope, exc)

    async def _keep(self, chain: Chain, value: Any) -> None:
        """The return value as the item's output: JSON, checked against the contract."""
        if hasattr(value, "model_dump") and callable(value.model_dump):
            value = value.model_dump(mode="json")  # a pydantic model instance
        contract = self.stage.contract
        if contract is not None:
            checked, problem = contract.check(value)
            if problem is not None:
                raise InvalidOutput(
                    f"the output does not match the contract: {problem}", stage=self.stage.name
                )
            value = checked
        try:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise CodeError(
                f"the chain returned {type(value).__name__}, not text or a JSON value", stage=self.stage.name
            ) from exc
        store, ctx = self.ctx.store, self.ctx
        store.save_stage(
            ctx.run_id,
            chain.item.index,
            self.stage.name,
            text,
            input_tokens=0,
            output_tokens=0,
            seconds=chain.seconds,
            attempts=chain.attempts,
            item_id=chain.item.id,
            durable=False,
            is_json=not isinstance(value, str),
        )
        await store.durable()
        chain.outputs[self.stage.name] = value
        chain.next_stage = len(ctx.pipeline.stages)

    def _fail(self, chain: Chain, scope: ItemScope, exc: BaseException) -> None:
        error = code_error(exc, scope.failure, stage=self.stage.name)
        error.item_id = chain.item.id
        chain.error, chain.error_stage = error, error.stage or self.stage.name
        if isinstance(error, FatalError):
            self.ctx.state.fail(error)
        if not isinstance(exc, CallError):
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.ctx.store.journal.log(self.ctx.run_id, chain.item.index, chain.item.id, text)


def code_error(exc: BaseException, failure: CallError | None, *, stage: str) -> CallError:
    """The error an item fails with when its chain raised ``exc``: a chainfleet error in the
    exception or its causes; else the call the gateway gave up on, when the exception is the
    client's word for it (an SDK's status error with the same status, or its connection
    error); else a :class:`CodeError` with the message and the last frame."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, CallError):
            if current.stage is None:
                current.stage = stage
            return current
        current = current.__cause__ or current.__context__
    if failure is not None and getattr(exc, "status_code", failure.status) == failure.status:
        return failure
    where = _last_frame(exc)
    message = f"{type(exc).__name__}: {clip(exc, 500)}" + (f" (at {where})" if where else "")
    return CodeError(message, stage=stage)


def _last_frame(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


def _takes_dict(fn: Callable[..., Any]) -> bool:
    """Whether the first parameter of ``fn`` is annotated as a dict (it takes the whole item)."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if not parameters:
        return False
    annotation = parameters[0].annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return any(word in str(text).lower() for word in ("dict", "mapping"))
