"""A stage of one item runs against a RunContext, never the Runner (issue 19, item 1): the stage
executor, given only the context, keeps its results in the store, counts its calls and records a
fatal error on the run's state."""

from __future__ import annotations

import asyncio

from chainfleet import Pipeline, RunSettings
from chainfleet.chain.context import RunContext
from chainfleet.chain.progress import Chain
from chainfleet.chain.stage import StageExecutor
from chainfleet.errors import AuthFailed
from chainfleet.inputs import Item
from chainfleet.providers import Completion, CompletionRequest
from chainfleet.store import RunStore
from conftest import pipeline_data


class Refusing:
    """A provider whose key was revoked: every call is a fatal 401."""

    kind = "refusing"

    async def complete(self, request: CompletionRequest) -> Completion:
        raise AuthFailed("401: the key was refused", status=401)

    async def aclose(self) -> None:
        return None


def context(pipeline: Pipeline, **providers: object) -> RunContext:
    store = RunStore.open("")
    store.begin_run("r1", pipeline=pipeline.name, settings={})
    return RunContext.local(pipeline, RunSettings(), run_id="r1", store=store, providers=providers)  # type: ignore[arg-type]


def test_a_chain_advances_through_every_stage_on_the_context_alone() -> None:
    pipeline = Pipeline.from_dict(pipeline_data())
    ctx = context(pipeline)
    chain = Chain(Item(id="1", index=1, line=1, fields={"topic": "Why sleep matters for memory"}))
    asyncio.run(StageExecutor(ctx).advance(chain))
    assert chain.error is None and chain.next_stage == 3
    assert set(chain.outputs) == {"research", "write", "edit"}
    assert ctx.stats.calls == 3 and ctx.stats.calls_succeeded == 3
    stored = ctx.store.db.execute("SELECT stage FROM stage_results ORDER BY stage").fetchall()
    assert [row[0] for row in stored] == ["edit", "research", "write"]


def test_a_fatal_error_fails_the_item_and_halts_the_run_state() -> None:
    pipeline = Pipeline.from_dict(pipeline_data())
    ctx = context(pipeline, sim=Refusing())
    chain = Chain(Item(id="1", index=1, line=1, fields={"topic": "Bicycles"}))
    asyncio.run(StageExecutor(ctx).advance(chain))
    assert chain.error_stage == "research" and isinstance(chain.error, AuthFailed)
    assert ctx.state.fatal is chain.error and ctx.halted
    assert chain.error.item_id == "1" and not chain.outputs
