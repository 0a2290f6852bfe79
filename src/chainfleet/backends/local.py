"""The local backend: a chain's stages run here, on this event loop, one after the other; or,
for a code pipeline (the user's own chain, :meth:`Pipeline.from_function`), its function does
(:class:`~chainfleet.code.work.CodeWork`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chainfleet.chain.stage import StageExecutor

if TYPE_CHECKING:
    from chainfleet.chain.context import RunContext
    from chainfleet.chain.progress import Chain
    from chainfleet.code.work import CodeWork

__all__ = ["LocalBackend"]


class LocalBackend:
    """Runs each chain in this process (what every run did before backends existed)."""

    name = "local"

    def __init__(self) -> None:
        self.executor: StageExecutor | CodeWork | None = None

    async def start(self, ctx: RunContext, concurrency: int) -> None:
        self.executor = self._executor(ctx)

    @staticmethod
    def _executor(ctx: RunContext) -> StageExecutor | CodeWork:
        if ctx.pipeline.work is None:
            return StageExecutor(ctx)
        from chainfleet.code.work import CodeWork  # httpx2 and the SDK plumbing: code runs only

        return CodeWork(ctx)

    async def advance(self, ctx: RunContext, chain: Chain) -> None:
        """Run the chain's remaining stages (or its function); record the first failure on the
        chain."""
        if self.executor is None:
            self.executor = self._executor(ctx)
        await self.executor.advance(chain)

    async def settle(self, ctx: RunContext) -> None:
        return None  # the limiters are the run's own

    async def aclose(self) -> None:
        if self.executor is not None and not isinstance(self.executor, StageExecutor):
            await self.executor.gateway.aclose()
