"""Planning a run before paying for it: how long it takes at each concurrency, and which limit binds.

The arithmetic, for N items, C chains in flight, a chain of k calls taking T seconds in all:

- without rate limits, C chains finish together and the next C start: ``ceil(N / C) * T``
  (the classic lesson's table has slips here: 10 pieces at 5 in flight is 2 waves of 30 s,
  60 s, not 90 s);
- C chains in flight make ``C * k / T`` calls a second; a limit of R requests/min allows
  ``R / 60``, and a tokens/min limit M with t tokens a call allows ``M / 60 / t``;
- so the most chains worth running are ``C* = min(R / 60, M / 60 / t) * T / k``: more only wait.
  The lesson's rule of thumb (60 requests/min, 3 calls a chain -> 15-18 chains) ignores the chain
  time: with 30 s chains, 60 requests/min sustain 10 chains in flight;
- the run takes the longer of the waves and the rate bound ``N * k / rate``.

Example::

    plan = Plan(items=[10, 50, 100], concurrency=[1, 5, 10, 25], call_seconds=[10, 10, 10])
    print(plan.render())
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["Cell", "Plan", "fmt_time"]


@dataclass(frozen=True)
class Cell:
    items: int
    concurrency: int
    seconds: float
    #: "latency" when the waves decide, else "requests/min" or "tokens/min"
    bound_by: str


@dataclass
class Plan:
    """Expected run times for a grid of item counts and concurrency levels."""

    items: list[int]
    concurrency: list[int]
    #: seconds per call of each LLM stage, in order (the chain time is their sum)
    call_seconds: list[float]
    rpm: float | None = None
    tpm: float | None = None
    tokens_per_call: float | None = None
    stage_names: list[str] = field(default_factory=list)
    #: expected calls of each stage per item (judges, revisions, repairs: :mod:`.gated`); 1 each
    #: unless given
    stage_calls: list[float] | None = None
    #: how those were reckoned, said under the table (e.g. the assumed pass rate)
    assumptions: str = ""

    def __post_init__(self) -> None:
        if not self.call_seconds:
            raise ValueError("a plan needs at least one call per chain")
        if self.tpm is not None and not self.tokens_per_call:
            raise ValueError("a tokens/min limit needs the tokens per call to plan with")
        if self.stage_calls is not None and len(self.stage_calls) != len(self.call_seconds):
            raise ValueError("stage_calls gives one count per entry of call_seconds")

    @property
    def counts(self) -> list[float]:
        return self.stage_calls if self.stage_calls is not None else [1.0] * len(self.call_seconds)

    @property
    def calls_per_chain(self) -> float:
        return sum(self.counts)

    @property
    def chain_seconds(self) -> float:
        return sum(s * n for s, n in zip(self.call_seconds, self.counts, strict=True))

    def rate_limit(self) -> tuple[float, str] | None:
        """The binding limit as calls per second, and its name; None when there is no limit."""
        limits = []
        if self.rpm:
            limits.append((self.rpm / 60.0, "requests/min"))
        if self.tpm and self.tokens_per_call:
            limits.append((self.tpm / 60.0 / self.tokens_per_call, "tokens/min"))
        return min(limits) if limits else None

    def best_concurrency(self) -> float | None:
        """Chains in flight that keep the run at (not over) the binding limit: C* above."""
        limit = self.rate_limit()
        if limit is None or self.chain_seconds <= 0:
            return None
        return limit[0] * self.chain_seconds / self.calls_per_chain

    def cell(self, items: int, concurrency: int) -> Cell:
        waves = math.ceil(items / concurrency) * self.chain_seconds
        limit = self.rate_limit()
        if limit is not None:
            rate_bound = items * self.calls_per_chain / limit[0]
            if rate_bound > waves:
                return Cell(items, concurrency, rate_bound, limit[1])
        return Cell(items, concurrency, waves, "latency")

    def table(self) -> list[list[Cell]]:
        return [[self.cell(n, c) for n in self.items] for c in self.concurrency]

    def render(self) -> str:
        """The lesson's table shape: a row per mode, a column per item count."""
        head = f"{'mode':<26}" + "".join(f"{f'{n} items':>20}" for n in self.items)
        lines = [head, "-" * len(head)]
        for row in self.table():
            c = row[0].concurrency
            mode = "sequential" if c == 1 else f"parallel ({c} concurrent)"
            cells = "".join(
                f"{fmt_time(cell.seconds) + ('*' if cell.bound_by != 'latency' else ''):>18}" for cell in row
            )
            lines.append(f"{mode:<26}{cells}")
        lines.append("")
        lines.append(self.chain_line())
        if self.assumptions:
            lines.append(self.assumptions)
        limit = self.rate_limit()
        if limit is None:
            lines.append("no rate limit given: every row is ceil(items / concurrency) x chain time.")
        else:
            rate, name = limit
            best = self.best_concurrency()
            assert best is not None
            told = []
            if self.rpm:
                told.append(f"{self.rpm:g} requests/min")
            if self.tpm:
                told.append(f"{self.tpm:g} tokens/min at {self.tokens_per_call:,.0f} tokens a call")
            lines.append(f"limits: {', '.join(told)}; the {name} limit binds ({rate * 60:,.0f} calls/min).")
            lines.append(
                f"best concurrency: about {math.floor(best)} chains in flight "
                f"(= {rate * 60:,.0f} calls/min x {self.chain_seconds:.3g} s a chain / 60 / "
                f"{self.calls_per_chain:.3g} calls a chain); more chains only wait for the limit."
            )
            lines.append("* the rate limit, not the chain time, decides this cell.")
        return "\n".join(lines)

    def chain_line(self) -> str:
        """What a chain is: its stages, its time, and (when gates add calls) its calls."""
        names = ", ".join(self.stage_names) if self.stage_names else f"{len(self.call_seconds)} calls"
        if self.stage_calls is None:
            parts = " + ".join(f"{s:g} s" for s in self.call_seconds)
            return f"chain: {names}; {self.chain_seconds:g} s a chain ({parts})"
        parts = " + ".join(f"{n:.2f} x {s:g} s" for s, n in zip(self.call_seconds, self.counts, strict=True))
        return (
            f"chain: {names}; {self.calls_per_chain:.2f} calls, {self.chain_seconds:.3g} s a chain ({parts})"
        )


def fmt_time(seconds: float) -> str:
    """A plan's time: seconds, with minutes or hours beside them once they read better
    ("90s (1.5 min)"); the plan's table shows both for a reader comparing cells."""
    if seconds < 90:
        return f"{seconds:,.0f}s"
    if seconds < 5400:
        return f"{seconds:,.0f}s ({seconds / 60:,.3g} min)"
    return f"{seconds:,.0f}s ({seconds / 3600:,.3g} h)"
