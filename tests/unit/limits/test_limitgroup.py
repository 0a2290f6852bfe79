"""``--limit-group NAME``: jobs on one machine share each model's request budget through a locked
file. Two members of one group on a scripted clock take from one bucket, at the rate of one.
(Real processes judged by the sim server's counts: tests/e2e/test_limitgroup.py.)"""

from __future__ import annotations

import json
import random
from pathlib import Path

from chainfleet.limits.group import LimitGroup


def test_two_members_of_a_group_take_from_one_bucket(tmp_path: Path) -> None:
    now = [100.0]
    a = LimitGroup("g", folder=tmp_path, clock=lambda: now[0])
    b = LimitGroup("g", folder=tmp_path, clock=lambda: now[0])
    rng = random.Random(7)
    next_ask = {0: 100.0, 1: 100.0}
    members = (a, b)
    while now[0] < 110.0:  # 10 s at 600/min (10 a second), each asking again when told to
        order = sorted(next_ask, key=lambda m: (next_ask[m], rng.random()))
        member = order[0]
        now[0] = next_ask[member]
        wait = members[member].take("m", per_minute=600)
        next_ask[member] = now[0] + wait + rng.uniform(0, 0.002)
    assert 95 <= a.taken + b.taken <= 101  # together, the rate of one: not twice it
    assert a.taken > 30 and b.taken > 30  # and neither starved
    assert json.loads((tmp_path / "g.json").read_text())["m"]["level"] < 1.5
