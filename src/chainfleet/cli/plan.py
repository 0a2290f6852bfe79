"""``chainfleet plan``: the expected time table and the concurrency that keeps under the limits."""

from __future__ import annotations

from typing import Any

import click

from chainfleet.cli.group import cli, config_errors
from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline
from chainfleet.plan.online import Plan
from chainfleet.runner.api import with_model


def _numbers(text: str, name: str, kind: type[int] | type[float] = int) -> list:  # type: ignore[type-arg]
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{text!r} is not a comma-separated list of numbers", where=name) from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError("give positive numbers, e.g. 10,50,100", where=name)
    return values


@cli.command("plan", short_help="Expected run times per concurrency, and which limit binds.")
@click.argument("pipeline_file", metavar="[PIPELINE.yaml]", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--items", "-n", default="10,50,100", show_default=True, metavar="N,N,...", help="Item counts (columns)."
)
@click.option(
    "--concurrency",
    "-c",
    default="1,5,10,25",
    show_default=True,
    metavar="C,C,...",
    help="Concurrency levels (rows); 1 is sequential.",
)
@click.option(
    "--latency",
    type=float,
    metavar="SECONDS",
    help="Seconds per call [default: the pipeline's sim latency, else 10].",
)
@click.option(
    "--calls",
    type=click.IntRange(min=1),
    metavar="K",
    help="Calls per chain [default: the pipeline's LLM stages, else 3].",
)
@click.option("--rpm", type=click.FloatRange(min=0, min_open=True), metavar="N", help="Requests per minute.")
@click.option("--tpm", type=click.FloatRange(min=0, min_open=True), metavar="N", help="Tokens per minute.")
@click.option(
    "--tokens-per-call",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="Prompt + output tokens of a call, for --tpm [default: from the pipeline's max_tokens plus 500].",
)
@click.option(
    "--batch",
    "compare_batch",
    is_flag=True,
    help="Also compare online with the provider's batch API: time (the batch window) and cost.",
)
@click.option(
    "--batch-hours",
    type=click.FloatRange(min=0, min_open=True, max=24),
    default=1.0,
    show_default=True,
    metavar="H",
    help="Hours one batch takes, for --batch (providers promise 24 h at most).",
)
@click.option(
    "--pass-rate",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.8,
    show_default=True,
    metavar="P",
    help="Share of a gated stage's tries that pass their gate, for its revisions (an assumption: "
    "compare measures it).",
)
@click.option(
    "--repair-rate",
    type=click.FloatRange(min=0, max=1, max_open=True),
    metavar="R",
    help="Share of schema replies (output:, a judge's verdict) that need a repair "
    "[default: the sim's invalid_output_rate, else 0.02].",
)
@click.option(
    "--model", metavar="MODEL", help="Plan as if every LLM stage used MODEL, e.g. openai:gpt-4o-mini."
)
@click.option(
    "--agent-turns",
    type=click.IntRange(min=1),
    metavar="N",
    help="Model turns an item of each agent stage (tools:) takes [default: the sim's tool_turns "
    "+ 1, else 3; at most the stage's max_turns].",
)
@config_errors
def plan_command(
    pipeline_file: str | None,
    items: str,
    concurrency: str,
    latency: float | None,
    calls: int | None,
    rpm: float | None,
    tpm: float | None,
    tokens_per_call: float | None,
    compare_batch: bool,
    batch_hours: float,
    pass_rate: float,
    repair_rate: float | None,
    model: str | None,
    agent_turns: int | None,
) -> None:
    """Print how long a batch takes at each concurrency, before running it.

    \b
    Examples:
      chainfleet plan                                   the classic lesson's table, computed
      chainfleet plan --rpm 60 --latency 10             which limit binds, the best concurrency
      chainfleet plan examples/content.yaml -n 1000 -c 10,50,100 --rpm 500 --tpm 200000
      chainfleet plan examples/content.yaml -n 100000 --rpm 500 --batch    online vs batch API
      chainfleet plan examples/content_gated.yaml -n 10 -c 1,5 --pass-rate 0.9   judges, revisions

    \b
    With a pipeline, a chain's calls are those its gates make too: each judge once a try, the
    revisions a failed gate asks for (at --pass-rate), the repairs of replies to a schema.
    """
    stage_names: list[str] = []
    stage_calls: list[float] | None = None
    rounds: list[int] | None = None
    assumptions = ""
    spec: str | None = None
    prices: dict[str, Any] = {}
    output_tokens = 1024.0
    seconds = latency
    count = calls
    per_call_tokens = tokens_per_call
    route_lines: list[str] = []
    if pipeline_file:
        pipeline = Pipeline.from_yaml(pipeline_file)
        if model:
            pipeline = with_model(pipeline, model)
        llm = [s for s in pipeline.stages if not s.is_tool]
        stage_names = [s.name for s in llm]
        spec = pipeline.model_for(llm[0]) if llm else None
        prices = {name: (p.input, p.output) for name, p in pipeline.prices.items()}
        output_tokens = sum(s.max_tokens for s in llm) / len(llm) if llm else output_tokens
        count = count or len(llm) or 1
        if seconds is None:
            seconds = pipeline.sim.latency + pipeline.sim.jitter / 2
        if per_call_tokens is None and llm:
            per_call_tokens = sum(s.max_tokens for s in llm) / len(llm) + 500
        if spec in pipeline.routes and rpm is None and tpm is None:
            from chainfleet.plan.routes import route_limit

            rpm, route_lines = route_limit(pipeline, spec, tokens_per_call=per_call_tokens)
        if rpm is None and tpm is None and len(pipeline.limits) == 1:
            only = next(iter(pipeline.limits.values()))
            rpm, tpm = only.rpm, only.tpm
        if calls is None and any(s.checks or s.contract for s in llm):
            stage_calls, assumptions = gated_calls(pipeline, pass_rate, repair_rate)
        if calls is None and any(s.is_agent for s in llm):
            stage_calls, rounds, said = agent_calls(pipeline, llm, stage_calls, agent_turns)
            assumptions = "\n".join(line for line in (assumptions, said) if line)
    elif model:
        raise ConfigError("--model plans a pipeline's stages: give PIPELINE.yaml too", where="--model")
    seconds = 10.0 if seconds is None else seconds
    count = count or 3
    if tpm is not None and per_call_tokens is None:
        per_call_tokens = 1500.0
    plan = Plan(
        items=_numbers(items, "--items"),
        concurrency=_numbers(concurrency, "--concurrency"),
        call_seconds=[seconds] * count,
        rpm=rpm,
        tpm=tpm,
        tokens_per_call=per_call_tokens,
        stage_names=stage_names,
        stage_calls=stage_calls,
        assumptions=assumptions,
    )
    click.echo(plan.render())
    for line in route_lines:
        click.echo(line)
    if compare_batch:
        from chainfleet.plan.batch import BatchPlan
        from chainfleet.providers.prices import Price, price_for

        price = price_for(spec, {k: Price(*v) for k, v in prices.items()}) if spec else None
        click.echo("")
        compared = BatchPlan(
            online=plan, price=price, output_tokens=output_tokens, batch_hours=batch_hours, rounds=rounds
        )
        compared.spec = spec or "openai"
        for n in plan.items:
            click.echo("\n".join(compared.lines(n)))
        if spec is None or price is None:
            click.echo("cost: unknown without a pipeline whose model has a price (or its prices: block)")


def agent_calls(
    pipeline: Pipeline, llm: list[Any], stage_calls: list[float] | None, told: int | None
) -> tuple[list[float], list[int], str]:
    """Each LLM stage's calls an item with its agent turns counted (times its gated tries, when
    gates add calls), its batch rounds (an agent's turns, else one), and the line saying what
    the turns assume (:mod:`chainfleet.plan.agents`)."""
    from chainfleet.plan.agents import expected_turns

    calls = list(stage_calls) if stage_calls is not None else [1.0] * len(llm)
    rounds: list[int] = []
    said = []
    for index, stage in enumerate(llm):
        turns = 1
        if stage.is_agent:
            turns, why = expected_turns(pipeline, stage, told)
            said.append(f"agent stage {stage.name}: {turns} model turns an item ({why})")
        calls[index] *= turns
        rounds.append(turns)
    return calls, rounds, "; ".join(said) + "."


def gated_calls(pipeline: Pipeline, pass_rate: float, repair_rate: float | None) -> tuple[list[float], str]:
    """Each LLM stage's expected calls per item, and the line saying what they assume."""
    from chainfleet.plan.gated import expected_calls

    if repair_rate is None:
        sim = all(pipeline.model_for(s) == "sim" for s in pipeline.stages if not s.is_tool)
        repair_rate = pipeline.sim.invalid_output_rate if sim else 0.02
    stages = expected_calls(pipeline, pass_rate=pass_rate, repair_rate=repair_rate)
    judges = sum(s.judges for s in stages)
    revised = sum(s.tries - 1 + s.again for s in stages)
    said = (
        f"calls an item: {sum(s.calls for s in stages):.2f} = {len(stages)} stages + {judges:.2f} judge "
        f"+ {revised:.2f} revision + {sum(s.repairs for s in stages):.2f} repair calls,\n"
        f"assuming {pass_rate:.0%} of gated tries pass (--pass-rate) and {repair_rate:.0%} of schema "
        "replies need a repair (--repair-rate); `compare` measures both."
    )
    return [s.calls for s in stages], said
