"""``chainfleet plan``: the expected time table and the concurrency that keeps under the limits."""

from __future__ import annotations

from typing import Any

import click

from chainfleet.cli.group import cli, config_errors
from chainfleet.errors import ConfigError
from chainfleet.plan.online import Plan


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
) -> None:
    """Print how long a batch takes at each concurrency, before running it.

    \b
    Examples:
      chainfleet plan                                   the classic lesson's table, computed
      chainfleet plan --rpm 60 --latency 10             which limit binds, the best concurrency
      chainfleet plan examples/content.yaml -n 1000 -c 10,50,100 --rpm 500 --tpm 200000
      chainfleet plan examples/content.yaml -n 100000 --rpm 500 --batch    online vs batch API
    """
    stage_names: list[str] = []
    spec: str | None = None
    prices: dict[str, Any] = {}
    output_tokens = 1024.0
    seconds = latency
    count = calls
    per_call_tokens = tokens_per_call
    route_lines: list[str] = []
    if pipeline_file:
        from chainfleet.pipeline import Pipeline

        pipeline = Pipeline.from_yaml(pipeline_file)
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
    )
    click.echo(plan.render())
    for line in route_lines:
        click.echo(line)
    if compare_batch:
        from chainfleet.plan.batch import BatchPlan
        from chainfleet.providers.prices import Price, price_for

        price = price_for(spec, {k: Price(*v) for k, v in prices.items()}) if spec else None
        click.echo("")
        compared = BatchPlan(online=plan, price=price, output_tokens=output_tokens, batch_hours=batch_hours)
        compared.spec = spec or "openai"
        for n in plan.items:
            click.echo("\n".join(compared.lines(n)))
        if spec is None or price is None:
            click.echo("cost: unknown without a pipeline whose model has a price (or its prices: block)")
