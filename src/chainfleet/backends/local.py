"""The local backend: a chain's stages run here, on this event loop, one after the other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chainfleet.errors import CallError, FatalError

if TYPE_CHECKING:
    from chainfleet.chain.stage import Chain
    from chainfleet.runner.core import Runner

__all__ = ["LocalBackend"]


class LocalBackend:
    """Runs each chain in this process (what every run did before backends existed)."""

    name = "local"

    async def start(self, runner: Runner) -> None:
        return None

    async def advance(self, runner: Runner, chain: Chain) -> None:
        """Run the chain's remaining stages; record the first failure on the chain."""
        stages = runner.pipeline.stages
        while chain.next_stage < len(stages):
            stage = stages[chain.next_stage]
            try:
                await runner.stages.run(chain, stage)
            except CallError as exc:
                exc.item_id, exc.stage = chain.item.id, stage.name
                chain.error, chain.error_stage = exc, stage.name
                if isinstance(exc, FatalError) and runner.fatal is None:
                    runner.fatal = exc
                return
            if await runner.review.park(chain, stage):  # waits for a person (review:)
                chain.parked = stage.name
                return
            chain.next_stage += 1

    async def settle(self, runner: Runner) -> None:
        return None  # the limiters are the runner's own

    async def aclose(self) -> None:
        return None
