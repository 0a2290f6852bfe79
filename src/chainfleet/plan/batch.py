"""``chainfleet plan --batch``: online against batch, in time and in cost.

Online, a run takes what :class:`~chainfleet.plan.online.Plan` says at its best concurrency (the waves,
or the rate limit when it binds). In batch mode each stage is one round trip through the
provider's batch queue, and a chain of k stages is k of them one after the other (stage 2 of an
item needs its stage 1), whatever the item count: chunks are cut at 50,000 (OpenAI) or 100,000
(Anthropic) requests and run side by side at the provider. So batch time is ``k x turnaround``:
typically well under the 24 h window (``--batch-hours``, 1 h unless told), at worst
``k x 24 h``. An agent stage (``tools:``) is one round trip per model turn, as many as
:mod:`chainfleet.plan.agents` expects. The batch APIs bill half the list price.

Example::

    plan = BatchPlan(online=Plan(items=[1000], concurrency=[25], call_seconds=[10, 10, 10], rpm=500),
                     price=Price(0.15, 0.60), input_tokens=500, output_tokens=800)
    print("\\n".join(plan.lines(1000)))
"""

from __future__ import annotations

from dataclasses import dataclass

from chainfleet.plan.online import Plan, fmt_time
from chainfleet.providers.prices import Price, batch_price

__all__ = ["WINDOW_HOURS", "BatchPlan"]

#: the providers' completion window: a batch ends (done or expired) within it
WINDOW_HOURS = 24.0


@dataclass
class BatchPlan:
    """Online vs batch for a pipeline: ``online`` is its plan; ``price`` None means unknown."""

    online: Plan
    price: Price | None = None
    input_tokens: float = 500.0
    output_tokens: float = 1024.0
    batch_hours: float = 1.0
    spec: str = "openai"
    #: batch round trips per stage, one after the other (an agent stage: one a model turn,
    #: :mod:`chainfleet.plan.agents`); None: one a stage
    rounds: list[int] | None = None

    @property
    def round_trips(self) -> int:
        """Batches an item's chain waits on, one after the other."""
        return sum(self.rounds) if self.rounds is not None else len(self.online.call_seconds)

    def online_seconds(self, items: int) -> tuple[float, int]:
        """The fastest online run among the plan's concurrency levels, and that level."""
        cells = [self.online.cell(items, c) for c in self.online.concurrency]
        best = min(cells, key=lambda cell: cell.seconds)
        return best.seconds, best.concurrency

    def batch_seconds(self, *, worst: bool = False) -> float:
        hours = WINDOW_HOURS if worst else self.batch_hours
        return self.round_trips * hours * 3600  # one batch a stage (an agent's: one a turn), in turn

    def cost(self, items: int, *, batch: bool) -> float | None:
        price = batch_price(self.spec, self.price) if batch else self.price
        if price is None:
            return None
        calls = items * self.online.calls_per_chain
        return price.cost(int(calls * self.input_tokens), int(calls * self.output_tokens))

    def lines(self, items: int) -> list[str]:
        online, level = self.online_seconds(items)
        typical, worst = self.batch_seconds(), self.batch_seconds(worst=True)
        online_cost, batch_cost = self.cost(items, batch=False), self.cost(items, batch=True)
        k = len(self.online.call_seconds)
        trips = self.round_trips
        header = f"{items:,} items, {k} stages: online against batch"
        if trips != k:  # agent stages: a batch round a model turn
            header = (
                f"{items:,} items, {k} stages in {trips} batch rounds (agent turns): online against batch"
            )
        lines = [
            header,
            f"  {'':<10}{'time':>28}{'cost':>14}",
            f"  {'online':<10}{fmt_time(online) + f' at -c {level}':>28}{_money(online_cost):>14}",
            f"  {'batch':<10}{fmt_time(typical) + f' ({trips} x {self.batch_hours:g} h)':>28}"
            f"{_money(batch_cost):>14}",
            f"  {'':<10}{'at worst ' + fmt_time(worst) + f' ({trips} x 24 h)':>28}",
        ]
        if online_cost is not None and batch_cost is not None and online_cost > 0:
            lines.append(
                f"  batch saves ${online_cost - batch_cost:,.2f} "
                f"({100 * (1 - batch_cost / online_cost):.0f}%)"
            )
        verdict = (
            "batch is also faster"
            if typical < online
            else f"online is {typical / max(online, 1e-9):,.1f}x faster"
        )
        lines.append(
            f"  {verdict} (batch time assumes {self.batch_hours:g} h a batch; --batch-hours to change)"
        )
        return lines


def _money(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"
