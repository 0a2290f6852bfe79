"""The report's routes section: where a route's calls went, what each target cost, why traffic moved.

Each session keeps its routes' counts (:meth:`chainfleet.chain.routes.Route.stats`) with its
stats in the store; this module sums them over the sessions of a run (a resumed item may finish
on another target) into ``report.json``'s ``routes``::

    "routes": {
      "fast": {
        "policy": "spill",
        "targets": [
          {"label": "openai:gpt-4o-mini (KEY_A)", "model": "openai:gpt-4o-mini", "calls": 2410,
           "ok": 2400, "failed": 10, "rate_limited": 3, "input_tokens": 61000,
           "output_tokens": 24000, "cost_usd": 0.0236},
          ...
        ],
        "moves": [{"kind": "spilled", "from": "openai:gpt-4o-mini (KEY_A)",
                   "to": "anthropic:claude-haiku-4-5", "reason": "full", "calls": 1240}]
      }
    }

and says it in words for report.md and the terminal: "spilled 1,240 calls to
anthropic:claude-haiku-4-5 while openai:gpt-4o-mini (KEY_A) was full".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["move_line", "routes_lines", "routes_markdown", "routes_section"]

_COUNTS = ("calls", "ok", "failed", "rate_limited", "input_tokens", "output_tokens")


def routes_section(sessions: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The routes of a run, summed over its sessions' stats (None: no route was used)."""
    found: dict[str, dict[str, Any]] = {}
    for stats in sessions:
        for name, route in (stats.get("routes") or {}).items():
            into = found.setdefault(name, {"policy": route.get("policy"), "targets": {}, "moves": {}})
            for target in route.get("targets", []):
                _add_target(into["targets"], target)
            for move in route.get("moves", []):
                key = (move["kind"], move["from"], move["to"], move["reason"])
                into["moves"][key] = into["moves"].get(key, 0) + int(move["calls"])
    if not found:
        return None
    return {
        name: {
            "policy": route["policy"],
            "targets": list(route["targets"].values()),
            "moves": [
                {"kind": kind, "from": src, "to": dst, "reason": why, "calls": n}
                for (kind, src, dst, why), n in route["moves"].items()
            ],
        }
        for name, route in found.items()
    }


def _add_target(targets: dict[str, dict[str, Any]], target: Mapping[str, Any]) -> None:
    label = target["label"]
    into = targets.setdefault(
        label, {"label": label, "model": target.get("model"), **dict.fromkeys(_COUNTS, 0), "cost_usd": 0.0}
    )
    for key in _COUNTS:
        into[key] += int(target.get(key) or 0)
    cost = target.get("cost_usd")
    into["cost_usd"] = None if cost is None or into["cost_usd"] is None else round(into["cost_usd"] + cost, 6)


def move_line(move: Mapping[str, Any]) -> str:
    """One move in words."""
    n = f"{move['calls']:,} call{'s' if move['calls'] != 1 else ''}"
    if move["kind"] == "spilled":
        return f"spilled {n} to {move['to']} while {move['from']} was full"
    if move["kind"] == "fell back":
        return f"fell back: {n} went to {move['to']} while {move['from']} was {move['reason']}"
    return f"{move['to']} came back into service after a probe succeeded ({move['calls']:,}x)"


def routes_lines(section: Mapping[str, Any] | None) -> list[str]:
    """The terminal's lines: per route, each target's share of the calls, then the moves."""
    lines = []
    for name, route in (section or {}).items():
        total = sum(t["calls"] for t in route["targets"]) or 1
        shares = ", ".join(
            f"{t['label']} {t['calls']:,} ({100 * t['calls'] / total:.0f}%"
            + (f", {t['rate_limited']:,} 429s" if t["rate_limited"] else "")
            + ")"
            for t in route["targets"]
        )
        lines.append(f"route {name} ({route['policy']}): {shares}")
        lines += [f"  {move_line(move)}" for move in route["moves"]]
    return lines


def routes_markdown(section: Mapping[str, Any] | None) -> list[str]:
    """report.md's "Routes" section: a table per route, then why traffic moved."""
    if not section:
        return []
    lines = ["", "## Routes", ""]
    for name, route in section.items():
        lines += [
            f"Route `{name}` ({route['policy']}):",
            "",
            "| target | calls | succeeded | 429s | failed | tokens in | tokens out | cost |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for t in route["targets"]:
            cost = f"${t['cost_usd']:.4f}" if t["cost_usd"] is not None else "unknown"
            lines.append(
                f"| {t['label']} | {t['calls']:,} | {t['ok']:,} | {t['rate_limited']:,} | "
                f"{t['failed'] - t['rate_limited']:,} | {t['input_tokens']:,} | "
                f"{t['output_tokens']:,} | {cost} |"
            )
        lines.append("")
        lines += [f"- {move_line(move)}" for move in route["moves"]] or ["- no traffic moved"]
        lines.append("")
    return lines
