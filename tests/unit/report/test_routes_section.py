"""The report's routes section sums each session's route counts (a resumed run's targets add
up), keeps a cost unknown once any session's was, and says in words why traffic moved."""

from __future__ import annotations

from typing import Any

from chainfleet.report.routes import move_line, routes_lines, routes_markdown, routes_section


def target(label: str, ok: int, cost: float | None) -> dict[str, Any]:
    counts = {"calls": ok + 1, "ok": ok, "failed": 1, "rate_limited": 1}
    tokens = {"input_tokens": 10 * ok, "output_tokens": 5 * ok}
    return {"label": label, "model": "openai:m", **counts, **tokens, "cost_usd": cost}


def session(ok_a: int, ok_b: int, cost_b: float | None, spilled: int) -> dict[str, Any]:
    move = {"kind": "spilled", "from": "A", "to": "B", "reason": "full", "calls": spilled}
    targets = [target("A", ok_a, 0.5), target("B", ok_b, cost_b)]
    return {"routes": {"fast": {"policy": "spill", "targets": targets, "moves": [move]}}}


def test_sessions_add_up_and_an_unknown_cost_stays_unknown() -> None:
    section = routes_section([session(10, 1_000, 0.25, 1_000), session(5, 240, None, 240), {"calls": 3}])
    assert section is not None
    a, b = section["fast"]["targets"]
    assert (a["ok"], a["calls"], a["rate_limited"], a["cost_usd"]) == (15, 17, 2, 1.0)
    assert (b["ok"], b["input_tokens"], b["cost_usd"]) == (1_240, 12_400, None)
    assert section["fast"]["moves"] == [
        {"kind": "spilled", "from": "A", "to": "B", "reason": "full", "calls": 1_240}
    ]


def test_moves_and_shares_in_words() -> None:
    section = routes_section([session(10, 30, 0.1, 1_240)])
    assert section is not None
    assert move_line(section["fast"]["moves"][0]) == "spilled 1,240 calls to B while A was full"
    fell = {"kind": "fell back", "from": "A", "to": "B", "reason": "out of service: auth_failed", "calls": 1}
    assert move_line(fell) == "fell back: 1 call went to B while A was out of service: auth_failed"
    assert routes_lines(section)[0] == "route fast (spill): A 11 (26%, 1 429s), B 31 (74%, 1 429s)"
    table = routes_markdown(section)
    assert "## Routes" in table and "| B | 31 | 30 | 1 | 0 | 300 | 150 | $0.1000 |" in table
    assert routes_section([{"calls": 1}]) is None and routes_markdown(None) == []
