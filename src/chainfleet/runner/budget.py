"""The budget: stop admitting items before a run would spend more than it may."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chainfleet.chain.context import run_prices
from chainfleet.config import RunSettings
from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline
from chainfleet.providers.prices import near_model, price_for
from chainfleet.redact import listed

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext

__all__ = ["Budget", "check_prices"]


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Stop admitting items before the run would spend more than this.

    The projection is what is spent so far plus, for every chain in flight and the next one,
    what a chain has cost on average (before any chain has finished: its calls' ``max_tokens``
    plus their prompts, priced). Chains in flight always finish.
    """

    max_cost: float | None = None
    max_tokens: int | None = None

    @property
    def reason(self) -> str:
        parts = []
        if self.max_cost is not None:
            parts.append(f"${self.max_cost:g}")
        if self.max_tokens is not None:
            parts.append(f"{self.max_tokens:,} tokens")
        return f"budget of {' / '.join(parts)} reached"

    def exhausted(self, ctx: RunContext) -> bool:
        """Whether admitting one more chain would project past the budget."""
        stats, cost = ctx.stats, ctx.spend.cost_usd
        chains = stats.done + stats.failed_now
        ahead = stats.in_flight + 1
        tokens = stats.input_tokens + stats.output_tokens
        if self.max_tokens is not None:
            per_chain = tokens / chains if chains else chain_token_estimate(ctx)
            if tokens + ahead * per_chain > self.max_tokens:
                return True
        if self.max_cost is not None:
            if cost is None:
                return False  # unknown prices: only a token budget can hold
            per_chain_cost = cost / chains if chains else chain_cost_estimate(ctx)
            if cost + ahead * per_chain_cost > self.max_cost:
                return True
        return False


def chain_token_estimate(ctx: RunContext) -> float:
    """Tokens one chain may use, before any has finished: prompts unknown, ~500 each."""
    return float(sum(s.max_tokens + 500 for s in ctx.pipeline.stages if not s.is_tool))


def chain_cost_estimate(ctx: RunContext) -> float:
    """What one chain may cost, before any has finished (its calls' ``max_tokens``, priced)."""
    total = 0.0
    for stage in ctx.pipeline.stages:
        if stage.is_tool:
            continue
        price = ctx.spend.price(ctx.pipeline.targets_of(ctx.pipeline.model_for(stage))[0])
        if price is not None:
            total += price.cost(500, stage.max_tokens)
    return total


def check_prices(pipeline: Pipeline, settings: RunSettings) -> list[str]:
    """Before the first call: a cost budget that cannot be enforced is refused (``ConfigError``
    naming the unpriced models and the ``prices:`` block to add); returns the warnings for
    model names that are probably misspelt ("gpt-4o-mni": its cost is unknown, never the near
    model's)."""
    prices = run_prices(pipeline, settings)
    used = pipeline.models_used()
    warnings = []
    for spec in used:
        near = near_model(spec.removesuffix("@batch"))
        if near is not None and price_for(spec, prices) is None:
            warnings.append(
                f"warning: {spec.removesuffix('@batch')!r} is not a model in the price table; did you "
                f"mean {near!r}? Its cost is unknown (it is not priced as {near!r})"
            )
    if settings.max_cost is None:
        return warnings
    unknown = [spec.removesuffix("@batch") for spec in used if price_for(spec, prices) is None]
    if unknown:
        names = listed(list(dict.fromkeys(unknown)))
        example = unknown[0]
        raise ConfigError(
            f"a cost budget (${settings.max_cost:g}) cannot be enforced: no price is known for "
            f"{names}. Add a prices: block to the pipeline (USD per million tokens), e.g. "
            f"prices: {{{example!r}: {{input: 1.25, output: 10.0}}}}, or give --prices FILE",
            where="--max-cost",
        )
    return warnings
