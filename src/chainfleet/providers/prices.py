"""What calls cost: US dollars per million input and output tokens, for common models.

The table is a snapshot of list prices (:data:`PRICES_AS_OF`, :data:`PRICES_SOURCE`) and goes
stale. A shared prices file (``--prices FILE``) overrides it, and a pipeline's ``prices:`` block
overrides both (``"openai:gpt-4o-mini": {input: 0.15, output: 0.60}``). A model that is in none
has an unknown price, and then the run's ``cost_usd`` is ``null`` rather than a wrong number.
The simulated model is free.

A dated snapshot of a model in the table (``gpt-4o-mini-2024-07-18``,
``claude-sonnet-4-5-20250929``, ``...-latest``) costs what its family costs; any other name is
unknown, however close: ``gpt-4o-mni`` is not priced as ``gpt-4o`` (:func:`near_model` gives the
did-you-mean a warning shows).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "BATCH_RATES",
    "PRICES",
    "PRICES_AS_OF",
    "PRICES_SOURCE",
    "Price",
    "batch_price",
    "near_model",
    "price_for",
]


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


#: when the table was written (not re-checked since: prices change; ``--prices FILE`` mends it)
PRICES_AS_OF = "2026-11-29"
#: where its figures come from
PRICES_SOURCE = "the providers' public list prices (openai.com/api/pricing, anthropic.com/pricing)"

#: list prices in USD per 1M tokens (input, output), by model name without the provider
PRICES: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "o3-mini": Price(1.10, 4.40),
    "o4-mini": Price(1.10, 4.40),
    "claude-opus-4-1": Price(15.00, 75.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-3-5-haiku-latest": Price(0.80, 4.00),
}


#: what a provider's batch API charges, as a share of its list price (OpenAI Batch API and
#: Anthropic Message Batches: half)
BATCH_RATES: dict[str, float] = {"openai": 0.5, "anthropic": 0.5, "sim": 0.0}


def batch_price(spec: str, price: Price | None) -> Price | None:
    """``price`` at the batch rate of ``spec``'s provider (half, unless the table says else).

    A named OpenAI-compatible endpoint (``local:llama3``) is charged as OpenAI's batch API.
    """
    if price is None:
        return None
    provider = spec.partition(":")[0]
    rate = BATCH_RATES.get(provider, 0.5)
    return Price(price.input * rate, price.output * rate)


def price_for(spec: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of model ``spec`` (``"openai:gpt-4o-mini"``), or None when unknown.

    ``spec@batch`` (``"openai:gpt-4o-mini@batch"``) is the price through the batch API.
    """
    if spec.endswith("@batch"):
        base = spec[: -len("@batch")]
        return batch_price(base, price_for(base, overrides))
    if overrides and spec in overrides:
        return overrides[spec]
    provider, _, model = spec.partition(":")
    if provider == "sim":
        return Price(0.0, 0.0)
    if overrides and model in overrides:
        return overrides[model]
    if model in PRICES:
        return PRICES[model]
    family = SNAPSHOT.sub("", model)  # "gpt-4o-mini-2024-07-18" costs what "gpt-4o-mini" costs
    return PRICES.get(family) if family != model else None


#: the suffix of a dated snapshot: -2024-07-18, -20250929, -latest
SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


def near_model(spec: str) -> str | None:
    """The table's model that ``spec``'s model is probably a misspelling of, or None (when it is
    in the table, a snapshot of one, or close to none). ``openai:gpt-4o-mni`` -> ``gpt-4o-mini``."""
    provider, _, model = spec.partition(":")
    if provider == "sim" or price_for(spec) is not None:
        return None
    close = difflib.get_close_matches(SNAPSHOT.sub("", model), list(PRICES), n=1, cutoff=0.85)
    return close[0] if close else None
