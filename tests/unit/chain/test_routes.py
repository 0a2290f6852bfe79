"""A route's decisions, on a virtual clock: where each call goes, and when a target is out.

- spill: a call goes to the first target whose limiter admits it within ``spill_after``; a
  full first target sends the next calls to the second before anything is refused, and the
  report's reason says so;
- a target whose limits are not known yet takes only its slow-start probe;
- fallback: a refused key takes a target out at once, a streak of connection failures after
  ``out_after``; after ``probe_after`` one call probes it and a success brings it back;
- split: weights [3, 1] share 400 calls 300/100;
- pin: an item's calls of one stage stay on one target unless it goes out;
- when every target is out, the one out first is tried; when all were tried, none is left.
"""

from __future__ import annotations

import asyncio

import pytest

from chainfleet.chain import routes
from chainfleet.chain.routes import Route, Target
from chainfleet.clock import VirtualClock
from chainfleet.errors import AuthFailed, ConnectionFailed, Overloaded, RateLimited, ServerError
from chainfleet.limits import ModelLimiter
from chainfleet.pipeline import RouteSettings
from chainfleet.providers.sim import SimProvider


def route_of(clock: VirtualClock, limiters: list[ModelLimiter | None], **settings: object) -> Route:
    models = [f"openai:m{i}" for i in range(len(limiters))]
    config = RouteSettings.model_validate({"targets": models, **settings})
    targets = [
        Target(i, label, models[i], SimProvider(clock=clock), models[i], limiter)
        for i, (label, limiter) in enumerate(zip(config.labels(), limiters, strict=True))
    ]
    return Route("r", config, targets, clock=clock)


def test_spill_moves_calls_to_the_second_target_when_the_first_is_full() -> None:
    clock = VirtualClock()
    first, second = (ModelLimiter(rpm=60, clock=clock) for _ in range(2))
    route = route_of(clock, [first, second], policy="spill", spill_after=1.0)

    async def scenario() -> list[int]:
        chosen, waiting = [], []
        for _ in range(6):
            target = route.choose(tokens=0)
            assert target is not None and target.limiter is not None
            chosen.append(target.index)
            waiting.append(asyncio.ensure_future(target.limiter.acquire(0)))
            await asyncio.sleep(0)  # the call takes its place in the limiter's queue
        await asyncio.gather(*waiting)
        return chosen

    chosen = asyncio.run(_on(clock, scenario()))
    # 60/min is one a second: the first target admits a call now and one within a second,
    # then it is full and the second takes the next two; then each queue is as long
    assert chosen[:4] == [0, 0, 1, 1]
    assert first.cooldowns == second.cooldowns == 0  # nothing was refused
    moves = route.stats()["moves"]
    assert moves[0]["kind"] == "spilled" and moves[0]["to"] == "openai:m1" and moves[0]["calls"] >= 2


def test_a_target_not_yet_read_takes_only_its_probe() -> None:
    clock = VirtualClock()
    first, second = ModelLimiter(clock=clock), ModelLimiter(clock=clock)  # told nothing
    route = route_of(clock, [first, second], policy="spill")

    async def scenario() -> list[int]:
        chosen = []
        for _ in range(3):
            target = route.choose(tokens=10)
            assert target is not None and target.limiter is not None
            chosen.append(target.index)
            asyncio.ensure_future(target.limiter.acquire(10))
            await asyncio.sleep(0)
        return chosen

    # each target's probe, then (both unknown) the first target's queue
    assert asyncio.run(_on(clock, scenario())) == [0, 1, 0]


def test_fallback_takes_a_refused_key_out_and_probes_it_back() -> None:
    clock = VirtualClock()
    route = route_of(clock, [None, None], policy="fallback", probe_after=10.0)
    first = route.choose()
    assert first is not None and first.index == 0
    assert route.failed(first, AuthFailed("401 invalid key")) is True
    assert [route.choose().index for _ in range(3)] == [1, 1, 1]  # type: ignore[union-attr]
    advance(clock, 10.0)  # the rest is over
    probe = route.choose()
    assert probe is not None and probe.index == 0
    assert route.choose().index == 1  # type: ignore[union-attr]  # one probe at a time
    route.succeeded(probe, 10, 5)
    assert route.choose().index == 0  # type: ignore[union-attr]
    kinds = {(m["kind"], m["to"], m["reason"]) for m in route.stats()["moves"]}
    assert ("fell back", "openai:m1", "out of service: auth_failed") in kinds
    assert ("back", "openai:m0", "a probe succeeded") in kinds


def test_a_streak_of_connection_failures_takes_a_target_out_a_429_does_not() -> None:
    clock = VirtualClock()
    route = route_of(clock, [None, None], out_after=3)
    target = route.targets[0]
    assert route.failed(target, RateLimited("429")) is False
    assert [route.failed(target, ConnectionFailed("refused")) for _ in range(3)] == [False, False, True]
    assert route.choose().index == 1  # type: ignore[union-attr]
    assert route.stats()["targets"][0]["rate_limited"] == 1


@pytest.mark.parametrize(
    "error",
    [ServerError("500", status=500), Overloaded("503", status=503), Overloaded("529 overloaded", status=529)],
)
def test_a_streak_of_5xx_takes_a_target_out_503_and_529_included(error: Exception) -> None:
    clock = VirtualClock()
    route = route_of(clock, [None, None], out_after=3, policy="fallback")
    target = route.targets[0]
    assert [route.failed(target, error) for _ in range(3)] == [False, False, True]  # type: ignore[arg-type]
    assert route.choose().index == 1  # type: ignore[union-attr]
    kinds = {(m["kind"], m["to"]) for m in route.stats()["moves"]}
    assert ("fell back", "openai:m1") in kinds


def test_split_shares_by_weights() -> None:
    clock = VirtualClock()
    route = route_of(clock, [None, None], policy="split", weights=[3, 1], pin="none")
    chosen = [route.choose().index for _ in range(400)]  # type: ignore[union-attr]
    assert chosen.count(0) == 300 and chosen.count(1) == 100
    assert route.stats()["moves"] == []  # a share is no move


def test_pin_keeps_an_items_stage_on_one_target_until_it_goes_out() -> None:
    clock = VirtualClock()
    route = route_of(clock, [None, None], policy="split", weights=[1, 1])
    pin = ("item-1", "write")
    assert {route.choose(pin).index for _ in range(5)} == {0}  # type: ignore[union-attr]
    assert route.choose(("item-2", "write")).index == 1  # type: ignore[union-attr]
    route.failed(route.targets[0], AuthFailed("401"))
    assert route.choose(pin).index == 1  # type: ignore[union-attr]


def test_when_every_target_is_out_the_one_out_first_is_tried() -> None:
    clock = VirtualClock()
    route = route_of(clock, [None, None])
    route.failed(route.targets[0], AuthFailed("401"))
    advance(clock, 1.0)
    route.failed(route.targets[1], AuthFailed("401"))
    assert route.choose().index == 0  # type: ignore[union-attr]
    assert route.choose(avoid=frozenset({0, 1})) is None


def advance(clock: VirtualClock, seconds: float) -> None:
    asyncio.run(clock.run(clock.sleep(seconds)))


async def _on(clock: VirtualClock, coro: object) -> list[int]:
    return await clock.run(coro)  # type: ignore[arg-type]


def test_a_route_forgets_its_oldest_pins_past_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "PINS_KEPT", 4)
    clock = VirtualClock()
    route = route_of(clock, [None, None], policy="split", weights=[1, 1])
    chosen = [route.choose((f"item-{i}", "a")).index for i in range(5)]  # type: ignore[union-attr]
    assert chosen == [0, 1, 0, 1, 0]
    # five pins, four kept: item-0's is forgotten and it is chosen afresh (the split's next turn)
    assert route.choose(("item-0", "a")).index == 1  # type: ignore[union-attr]
    assert route.choose(("item-4", "a")).index == 0  # type: ignore[union-attr]  # still pinned
