"""The budget: stop admitting items before a run would spend more than it may."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext

__all__ = ["Budget"]


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
        price = ctx.spend.price(ctx.pipeline.model_for(stage))
        if price is not None:
            total += price.cost(500, stage.max_tokens)
    return total
