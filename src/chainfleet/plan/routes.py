"""A route's throughput before a run: the sum of its targets' limits, and which target binds.

A route's targets each have their own limiter, so a route can sustain the sum of their rates.
Each target's rate is its requests/min, or fewer when its tokens/min run out first at the
plan's tokens per call; :func:`route_limit` adds them up and says, per target, which limit
binds it. A target with no told limit (``rpm``/``tpm`` on the target, else the pipeline's
``limits:`` for its model) makes the route's sum unknown: it is learned from headers at run
time.

Example::

    rpm, lines = route_limit(pipeline, "fast", tokens_per_call=1_700)
    # 1100.0, ["route fast: 1,100 requests/min over 2 targets ...", ...]
"""

from __future__ import annotations

from chainfleet.pipeline import Pipeline

__all__ = ["route_limit"]


def route_limit(
    pipeline: Pipeline, spec: str, *, tokens_per_call: float | None
) -> tuple[float | None, list[str]]:
    """The requests/min route ``spec`` sustains (None: a target's limit is not known) and the
    lines that explain it."""
    route = pipeline.routes[spec]
    rates: list[tuple[float, str, str]] = []
    unknown = []
    for target, label in zip(route.targets, route.labels(), strict=True):
        configured = pipeline.limits.get(target.model)
        rpm = target.rpm or (configured.rpm if configured else None)
        tpm = target.tpm or (configured.tpm if configured else None)
        options = []
        if rpm:
            options.append((float(rpm), "requests/min"))
        if tpm and tokens_per_call:
            options.append((tpm / tokens_per_call, "tokens/min"))
        if not options:
            unknown.append(label)
            continue
        rate, bound = min(options)
        rates.append((rate, label, bound))
    if unknown:
        return None, [
            f"route {spec}: no limit told for {', '.join(unknown)}; the route's throughput is the "
            "sum of its targets' limits, learned from their headers at run time"
        ]
    parts = "; ".join(f"{label} {rate:,.0f}/min ({bound} bind)" for rate, label, bound in rates)
    lines = [f"route {spec} ({route.policy}): {parts}"]
    if route.policy == "spill":
        total = sum(rate for rate, _, _ in rates)
        lines.append(f"  {total:,.0f} requests/min, the sum of its targets; {rates[0][1]} fills first")
    elif route.policy == "fallback":
        total = rates[0][0]
        lines.append(f"  {total:,.0f} requests/min: only {rates[0][1]} takes calls while in service")
    else:  # shares by weight: the target that reaches its limit first sets the pace of all
        weights = route.weights or []
        paces = [
            (rate * sum(weights) / w, label)
            for (rate, label, _), w in zip(rates, weights, strict=True)
            if w > 0
        ]
        total, binding = min(paces)
        lines.append(f"  {total:,.0f} requests/min split by weights, bound by {binding}")
    return total, lines
