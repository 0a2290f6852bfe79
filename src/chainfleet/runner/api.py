"""The Python API: :func:`run` and :func:`arun`, and what they check before the first call.

Everything that can be wrong with a run's input (the pipeline, its templates against the input's
fields, the input's lines, the output folder, a provider's key) is found here, before any model
is called: the one place exit-2 errors arise. The settings are one :class:`RunSettings`; its
fields may also be given as keywords (``run(pipeline, items, concurrency=5)``).

Example::

    report = run(Pipeline.from_yaml("examples/content.yaml"), "examples/topics.txt", concurrency=5)
    print(report.items_succeeded, report.time_saved_pct)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from chainfleet.backends import Backend, backend_for
from chainfleet.chain.batch import with_batch
from chainfleet.chain.mcp import McpServers, start_servers
from chainfleet.clock import Clock, SystemClock
from chainfleet.code.target import is_target
from chainfleet.code.target import load_pipeline as load_code_pipeline
from chainfleet.config import ItemFiles, RunSettings
from chainfleet.errors import ConfigError, PipelineError
from chainfleet.inputs import InputSource, items_from, open_input
from chainfleet.pipeline import Pipeline
from chainfleet.providers import Provider, ProviderPool
from chainfleet.report.model import RunReport
from chainfleet.report.results import PARQUET_MISSING, Progress, parquet_available
from chainfleet.runner.budget import check_prices
from chainfleet.runner.core import Runner, latest_run_id
from chainfleet.signals import say
from chainfleet.store.folder import open_store, releasing_out
from chainfleet.store.runstore import RunStore

__all__ = [
    "Items",
    "Target",
    "arun",
    "as_pipeline",
    "as_source",
    "finish_output",
    "load_pipeline",
    "prepare",
    "run",
    "with_model",
]

Items = InputSource | Iterable[str | Mapping[str, Any]] | str | os.PathLike[str]
#: what a run runs: a pipeline, or the user's own chain, ``async def fn(item, fleet)``
Target = Pipeline | Callable[..., Any]


def as_pipeline(target: Target, *, output: Any = None) -> Pipeline:
    """``target`` as a pipeline: a function (the user's own chain) becomes a code pipeline
    (:meth:`Pipeline.from_function`, checked as ``chainfleet run file.py:fn`` checks it)."""
    if isinstance(target, Pipeline):
        if output is not None:
            raise ConfigError("output= is for a function's return value; a pipeline's stages have their own")
        return target
    from chainfleet.code.target import check_function

    check_function(target, where=getattr(target, "__qualname__", repr(target)))
    return Pipeline.from_function(target, output=output)


def as_source(items: Items, pipeline: Pipeline) -> InputSource:
    """An ``InputSource`` from a path, an ``InputSource``, or an iterable of strings/mappings."""
    if isinstance(items, InputSource):
        return items
    if isinstance(items, str | os.PathLike):
        return open_input(items, input_field=pipeline.input)
    return items_from(items, input_field=pipeline.input)


def load_pipeline(path: str | os.PathLike[str], items: Items | None = None) -> Pipeline:
    """``Pipeline.from_yaml(path)``, whose problems, when it has some, include those the input
    shows (a template variable no stage and no field of ``items`` provides, such as a typo):
    every mistake of a file is named in one run, not one round after another. A Python target
    (``file.py:fn``, ``module:fn``: the user's own chain) is a code pipeline."""
    if isinstance(path, str) and is_target(path):
        return load_code_pipeline(path)
    try:
        return Pipeline.from_yaml(path)
    except PipelineError as exc:
        partial = getattr(exc, "partial", None)
        if partial is None or items is None:
            raise
        try:
            source = as_source(items, partial)
            partial.check_fields(
                source.fields, input_name=str(source.path or "the input"), text_lines=source.format == "txt"
            )
        except ConfigError as more:
            ConfigError.gather([exc, more])
        raise


def with_model(pipeline: Pipeline, model: str, given: Collection[str] = ()) -> Pipeline:
    """A copy of ``pipeline`` whose LLM stages all use ``model`` (the ``--model`` flag);
    ``given`` are the names of the providers the run was handed from Python. For the user's
    own chain, ``model`` is what its OpenAI or Anthropic calls are sent to instead of the model
    they name (see :class:`~chainfleet.code.gateway.Gateway`)."""
    if pipeline.work is not None and model.partition(":")[0] not in ("openai", "anthropic"):
        raise ConfigError(
            f"for your own chain, --model is the model its calls are sent to: openai:NAME or "
            f"anthropic:NAME, not {model!r}",
            where="--model",
        )
    try:
        if model.partition(":")[0] not in given:  # (a provider handed from Python is known)
            pipeline.check_model_name(model)  # a model, or a route's name
    except ValueError as exc:
        raise ConfigError(str(exc), where="--model") from exc
    return pipeline.with_model(model)


def prepare(
    pipeline: Pipeline,
    items: Items,
    *,
    out: str | os.PathLike[str] | None = None,
    model: str | None = None,
    check_input: bool = True,
    providers: Mapping[str, Provider] | None = None,
    resume: bool = False,
    force: bool = False,
    settings: RunSettings | None = None,
) -> tuple[Pipeline, InputSource, RunStore | None, int | None]:
    """Everything checked and opened before the first call: the one place exit-2 errors arise.

    Applies ``--model``, opens the input, checks every template variable against its fields,
    scans the whole input (when it can be read twice) and opens the run store in ``out``,
    holding the folder (see :mod:`chainfleet.store.folder`; the caller releases it).
    With ``settings``, a cost budget needs every model's price (else ``ConfigError``), and a
    model name close to one in the price table gets a warning on stderr.
    Returns (pipeline, source, store, item count or None).
    """
    if model:
        pipeline = with_model(pipeline, model, given=list(providers or {}))
    source = as_source(items, pipeline)
    pipeline.check_fields(
        source.fields, input_name=str(source.path or "the input"), text_lines=source.format == "txt"
    )
    total = None
    try:
        ProviderPool(pipeline, clock=SystemClock(), overrides=dict(providers or {})).check()
    except ConfigError as exc:
        if model:
            raise ConfigError(exc.reason, where="--model") from exc
        raise
    for warning in check_prices(pipeline, settings) if settings is not None else ():
        say(warning, err=True)
    if check_input and source.reiterable:
        total = source.scan(required=[v for v in pipeline.input_fields_needed() if v != "id"])
    store = open_store(out, resume=resume, force=force) if out is not None else None
    return pipeline, source, store, total


@releasing_out
async def arun(
    pipeline: Target,
    items: Items,
    settings: RunSettings | None = None,
    *,
    output: Any = None,
    out: str | os.PathLike[str] | None = None,
    clock: Clock | None = None,
    providers: Mapping[str, Provider] | None = None,
    on_start: Callable[[Runner], None] | None = None,
    saved: Mapping[str, Any] | None = None,
    on_output: Callable[[], None] | None = None,
    output_progress: Progress | None = None,
    **options: Any,
) -> RunReport:
    """Run ``pipeline`` over ``items`` and return its :class:`RunReport`.

    ``pipeline`` may be the user's own chain instead: ``async def article(topic, fleet)`` (see
    :mod:`chainfleet.code`), its return value the item's output, checked against ``output``
    (a JSON Schema or a pydantic model) when given.

    ``items`` is a file path (txt, JSONL, CSV), an ``InputSource``, or an iterable of strings or
    mappings. With ``out`` the output folder is written (results.jsonl, one markdown file per
    item, report.json, report.md, the run store). ``check_input`` reads the whole input once
    before the first call, so a malformed line fails the run with ``InputError`` up front.

    ``rpm``/``tpm`` limit every model (else the pipeline's ``limits:``, else what the provider's
    headers say). ``concurrency="auto"`` adapts the chains in flight to what the server takes
    (AIMD on 429/503 and rising latency), up to ``max_concurrency``.

    ``resume`` continues the run in ``out``: no stage result already there for the same input
    is called again. ``cache``: None keeps a response cache of real-provider, temperature-0
    calls in the run's store; a folder shares one across runs; False turns it off. The budget
    (``max_cost`` in USD, ``max_tokens``) stops admission before the projected spend passes it.
    ``saved`` is kept with the run (the CLI keeps what ``chainfleet resume`` needs).
    ``limit_group`` names a :class:`~chainfleet.limits.group.LimitGroup`: every job on this
    machine in the same group shares each model's request budget (``--limit-group``).

    ``out`` is held for the whole run: another process (or run) on it is refused with
    ``ConfigError``, and so is a non-empty folder that holds no run, unless ``force``.

    ``backend="ray"`` runs the chains in ``workers`` Ray actors (default: one per CPU of the
    cluster, at most ``concurrency``) on the cluster at ``address`` (``auto``, ``HOST:PORT`` or
    ``ray://HOST:10001``; default: ``RAY_ADDRESS``, else a Ray node started here on 127.0.0.1
    only). The store, the output folder and the report are the same as a local run's.

    ``batch`` puts every LLM stage in batch mode (as ``mode: batch`` does; see
    :mod:`chainfleet.chain.batch`); without ``concurrency``, batch mode keeps ``batch.concurrency``
    chains in flight.

    The output phase (after the last result): ``on_output`` is called as it starts (the CLI
    lets a signal stop it there); ``item_files`` is ``auto`` (one file per item for runs of at
    most 10,000 items), ``all`` or ``none``; ``output_progress(done, total)`` follows it;
    ``parquet`` writes results.parquet beside results.jsonl (it needs pyarrow: the ``parquet``
    extra; without it ``ConfigError`` before any call).
    """
    settings = (settings or RunSettings()).replace(**options)
    pipeline = as_pipeline(pipeline, output=output)
    if settings.parquet and not parquet_available():
        raise ConfigError(PARQUET_MISSING, where="--parquet")
    if settings.batch:
        pipeline = with_batch(pipeline)
    batched = any(pipeline.batched(stage) for stage in pipeline.stages)
    _refuse_batched_routes(pipeline)
    if batched and settings.concurrency == "auto":
        raise ConfigError("--concurrency auto is for online calls; batch mode has no use for it")
    if batched and settings.backend != "local":
        raise ConfigError("batch mode runs on the local backend: the provider runs the batch, not Ray")
    engine = backend_for(settings.backend, address=settings.address, workers=settings.workers)
    if batched and settings.concurrency is None:
        settings = settings.replace(concurrency=max(pipeline.concurrency, pipeline.batch.concurrency))
    servers = await start_servers(pipeline)  # MCP servers: listed now, exit 2 if one cannot start
    try:
        return await _run_prepared(
            pipeline, items, settings, servers, engine, out=out, clock=clock, providers=providers,
            on_start=on_start, saved=saved, on_output=on_output, output_progress=output_progress,
        )  # fmt: skip
    finally:
        await servers.aclose()


def _refuse_batched_routes(pipeline: Pipeline) -> None:
    """A stage in batch mode on a route stops the run before any call (exit 2): a batch job goes
    to one provider's batch API, so a route's policy (spill, fallback, split) and its report
    counts could not hold; before this check the batch went to the route's first target,
    unreported, out of service or not."""
    for index, stage in enumerate(pipeline.stages):
        spec = pipeline.model_for(stage)
        if pipeline.batched(stage) and spec in pipeline.routes:
            first = pipeline.routes[spec].targets[0].model
            raise ConfigError(
                f"batch mode cannot use route {spec!r}: a batch goes to one provider's batch API; "
                f"name one of its targets as this stage's model (e.g. {first}) or run it online",
                where=f"{pipeline.source or 'pipeline'}: stage {stage.name!r} (stages[{index}])",
            )


async def _run_prepared(
    pipeline: Pipeline,
    items: Items,
    settings: RunSettings,
    servers: McpServers,
    engine: Backend,
    *,
    out: str | os.PathLike[str] | None,
    clock: Clock | None,
    providers: Mapping[str, Provider] | None,
    on_start: Callable[[Runner], None] | None,
    saved: Mapping[str, Any] | None,
    on_output: Callable[[], None] | None,
    output_progress: Progress | None,
) -> RunReport:
    """The run once its checks passed and its MCP servers started: the store, the chains, the
    output folder."""
    pipeline, source, store, total = prepare(
        pipeline,
        items,
        out=out,
        model=settings.model,
        check_input=settings.check_input,
        providers=providers,
        resume=settings.resume,
        force=settings.force,
        settings=settings,
    )
    if settings.resume and settings.run_id is None and store is not None:
        # a resume goes on with the run: one run, one more session
        settings = settings.replace(run_id=latest_run_id(store))
    runner = Runner(
        pipeline, settings, store=store, clock=clock, providers=providers, backend=engine, saved=saved
    )
    runner.total = total
    runner.ctx.agent_tools = servers.by_stage
    if on_start is not None:
        on_start(runner)
    report = await runner.run(source)
    finish_output(
        runner,
        report,
        out,
        item_files=settings.item_files,
        on_output=on_output,
        progress=output_progress,
        parquet=settings.parquet,
        trajectory_chars=settings.trajectory_chars,
    )
    return report


def finish_output(
    runner: Runner,
    report: RunReport,
    out: str | os.PathLike[str] | None,
    *,
    item_files: ItemFiles = "auto",
    on_output: Callable[[], None] | None = None,
    progress: Progress | None = None,
    parquet: bool = False,
    trajectory_chars: int = 2000,
) -> None:
    """Keep the report in the store (for ``chainfleet report``) and write the output folder
    (see :func:`chainfleet.report.output.write_output`); ``on_output`` is called first."""
    runner.store.end_run(runner.run_id, status=runner.status, summary=report.to_dict())
    if on_output is not None:
        on_output()
    if out is not None:
        from chainfleet.report.output import write_output

        write_output(
            Path(out),
            report,
            item_files=item_files,
            progress=progress,
            parquet=parquet,
            trajectory_chars=trajectory_chars,
        )


def run(pipeline: Target, items: Items, settings: RunSettings | None = None, **kwargs: Any) -> RunReport:
    """Blocking :func:`arun`, for scripts and notebooks without an event loop of their own."""
    return asyncio.run(arun(pipeline, items, settings, **kwargs))
