"""What the report says about rate limits: which limit held, how it was learned, who else used
the key.

:func:`limit_facts` turns one model's :class:`~chainfleet.limits.limiter.ModelLimiter` at the end of a
run into plain JSON (it goes into ``report.json`` under ``rates.models.MODEL`` and so into the
run store's summary, where a report rebuilt from the store reads it); :func:`limit_lines` turns
those facts into the sentences a user reads, e.g.::

    openai:gpt-4o-mini: requests/min held: 1,176/min (learned from the server's headers after 1 probe)
    openai:gpt-4o-mini: told 1,500/min; the server held 1,200
    openai:gpt-4o-mini: another job shares this key: others took about 48% of the requests the
      server took while this run ran (estimated from its headers); this run's share went down
      to 47% of the limit
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chainfleet.limits.limiter import ModelLimiter

__all__ = ["limit_facts", "limit_lines"]


def limit_facts(limiter: ModelLimiter, *, succeeded: int | None = None) -> dict[str, Any]:
    """One model's limits at the end of a run, as JSON-ready facts.

    ``achieved`` counts the calls that succeeded (``succeeded`` of them; every attempt when
    not given) over the time calls were sent; ``attempts`` every attempt sent, 429s included.
    """
    share = limiter.share
    held_rpm = limiter.limit_rpm * share.factor if limiter.limit_rpm else None
    held_tpm = limiter.limit_tpm * share.factor if limiter.limit_tpm else None
    attempts_rpm = limiter.achieved_rpm()
    achieved_rpm = attempts_rpm
    if succeeded is not None and attempts_rpm is not None and limiter.sent:
        achieved_rpm = attempts_rpm * min(succeeded, limiter.sent) / limiter.sent
    return {
        "told": {"rpm": limiter.told_rpm, "tpm": limiter.told_tpm},
        "server": {"rpm": limiter.server_rpm, "tpm": limiter.server_tpm},
        "learned_from": _learned_from(limiter),
        "probes": limiter.probes,
        "held": {"rpm": _round(held_rpm), "tpm": _round(held_tpm)},
        "bound": _bound(limiter),
        "achieved": {"rpm": _round(achieved_rpm), "tpm": _round(limiter.achieved_tpm())},
        "attempts": {"rpm": _round(attempts_rpm), "sent": limiter.sent},
        "cooldowns": limiter.cooldowns,
        "share": round(share.factor, 3),
        "share_lowest": round(share.lowest, 3),
        "refusals_under_limit": share.refusals,
        "others_pct": share.others_pct,
        "shared": share.shared,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _learned_from(limiter: ModelLimiter) -> str:
    told = limiter.told_rpm is not None or limiter.told_tpm is not None
    server = limiter.server_rpm is not None or limiter.server_tpm is not None
    if told and server and (limiter.limit_rpm != limiter.told_rpm or limiter.limit_tpm != limiter.told_tpm):
        return "told, lowered to the server's headers"
    if told:
        return "told"
    if server:
        return "the server's headers"
    return "nothing (no limit told, none in the headers)"


def _bound(limiter: ModelLimiter) -> str | None:
    """Which limit the run pressed against: requests or tokens (None: neither came near)."""
    ratios = {}
    rpm, tpm = limiter.achieved_rpm(), limiter.achieved_tpm()
    if rpm is not None and limiter.limit_rpm:
        ratios["requests"] = rpm / limiter.limit_rpm
    if tpm is not None and limiter.limit_tpm:
        ratios["tokens"] = tpm / limiter.limit_tpm
    if not ratios:
        return None
    name = max(ratios, key=lambda k: ratios[k])
    return name if ratios[name] >= 0.5 else None


def limit_lines(models: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The report's sentences about each model's limits (from :func:`limit_facts` output)."""
    lines: list[str] = []
    for spec, facts in models.items():
        if "learned_from" not in facts:
            continue
        lines.extend(f"{spec}: {line}" for line in _model_lines(facts))
    return lines


def _model_lines(facts: Mapping[str, Any]) -> list[str]:
    lines = []
    held, bound = facts.get("held") or {}, facts.get("bound")
    how = f"learned from {facts['learned_from']}"
    if facts.get("probes"):
        probes = facts["probes"]
        how += f" after {probes} probe{'s' if probes != 1 else ''}"
    if bound == "requests" and held.get("rpm"):
        lines.append(f"requests/min held: {held['rpm']:,.0f}/min ({how})")
    elif bound == "tokens" and held.get("tpm"):
        lines.append(f"tokens/min held: {held['tpm']:,.0f}/min ({how})")
    elif held.get("rpm") or held.get("tpm"):
        lines.append(f"no rate limit held: the chains in flight set the pace ({how})")
    told, server = facts.get("told") or {}, facts.get("server") or {}
    for kind, unit in (("rpm", "min"), ("tpm", "min")):
        if told.get(kind) and server.get(kind) and server[kind] < told[kind]:
            what = "" if kind == "rpm" else " tokens"
            lines.append(f"told {told[kind]:,.0f}{what}/{unit}; the server held {server[kind]:,.0f}")
    lines.extend(_observed_hold(facts))
    lines.extend(_sharing_lines(facts))
    return lines


#: below this share of the told rate, with 429s, the server held less than it was said to
HELD_LESS = 0.9


def _observed_hold(facts: Mapping[str, Any]) -> list[str]:
    """A server that holds less than told without saying so in headers: its 429s show it, and
    the rate at which calls succeeded is the most the run can say of what it held (the cooldowns
    after each 429 keep the run below the server's own limit, so this is a lower bound)."""
    told = (facts.get("told") or {}).get("rpm")
    server = (facts.get("server") or {}).get("rpm")
    achieved = (facts.get("achieved") or {}).get("rpm")
    refusals = facts.get("cooldowns") or 0
    if facts.get("shared") or not told or server or not achieved or not refusals:
        return []  # another job on the key is told apart by its own lines
    if achieved >= HELD_LESS * told:
        return []
    return [
        f"told {told:,.0f}/min; the server held less without saying how much: it refused calls "
        f"({refusals:,} 429 cooldown{'s' if refusals != 1 else ''}) and calls succeeded at about "
        f"{achieved:,.0f}/min"
    ]


def _sharing_lines(facts: Mapping[str, Any]) -> list[str]:
    if not facts.get("shared"):
        return []
    pct, lowest = facts.get("others_pct"), facts.get("share_lowest", 1.0)
    if pct is not None and pct >= 5:
        return [
            f"another job shares this key: others took about {pct:.0f}% of the requests the "
            f"server took while this run ran (estimated from its headers); this run's share "
            f"went down to {lowest:.0%} of the limit"
        ]
    refusals = facts.get("refusals_under_limit", 0)
    return [
        f"another job (or client) appears to share this key: {refusals} 429s came while this "
        f"run kept under the limit; it lowered its rate to {lowest:.0%} of the limit and "
        "probed back up"
    ]
