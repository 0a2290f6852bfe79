"""The sim server's queue (``SlotQueue``) on its own: slots granted first come first served, a
cancelled waiter leaves the line, a resize lets waiters in, and ``--slots`` on the command.
(The queueing server over the SDK: tests/e2e/test_simserver_queue.py.)"""

from __future__ import annotations

import asyncio
import time

from chainfleet.sim.queue import SlotQueue


def _start(queue: SlotQueue, name: str, order: list[str], release: asyncio.Event) -> asyncio.Task[None]:
    async def hold() -> None:
        async with queue.slot():
            order.append(name)
            await release.wait()

    return asyncio.ensure_future(hold())


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_slots_are_granted_first_come_first_served() -> None:
    async def main() -> list[str]:
        now = [0.0]
        queue = SlotQueue(1, clock=lambda: now[0])
        order: list[str] = []
        gates = {name: asyncio.Event() for name in "abc"}
        tasks = [_start(queue, name, order, gates[name]) for name in "abc"]
        await _settle()
        assert order == ["a"] and queue.stats()["queued"] == 2
        now[0] = 2.0
        gates["a"].set()
        await _settle()
        assert order == ["a", "b"]
        gates["b"].set()
        gates["c"].set()
        await asyncio.gather(*tasks)
        assert queue.stats()["wait_seconds"] == 4.0  # b and c each waited 2 s on the clock
        return order

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_a_cancelled_waiter_leaves_the_line_and_resize_lets_waiters_in() -> None:
    async def main() -> None:
        queue = SlotQueue(1, clock=time.monotonic)
        order: list[str] = []
        gate = asyncio.Event()
        tasks = {name: _start(queue, name, order, gate) for name in "abc"}
        await _settle()
        tasks["b"].cancel()
        await _settle()
        assert queue.stats()["queued"] == 1
        queue.resize(2)
        await _settle()
        assert order == ["a", "c"] and queue.stats()["busy"] == 2
        gate.set()
        await asyncio.gather(tasks["a"], tasks["c"])
        assert tasks["b"].cancelled() and queue.stats()["busy"] == 0

    asyncio.run(main())


def test_the_command_takes_slots_and_refuses_zero() -> None:
    from click.testing import CliRunner

    import chainfleet.cli.simserver  # noqa: F401 - registers the command
    from chainfleet.cli import cli

    result = CliRunner().invoke(cli, ["sim-server", "--slots", "0"])
    assert result.exit_code == 2 and "--slots" in result.stderr
    assert "--slots N" in CliRunner().invoke(cli, ["sim-server", "--help"]).output
