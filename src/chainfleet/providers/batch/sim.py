"""Batch jobs on the built-in ``sim`` model, offline: ``--batch`` with ``sim`` needs no server.

A job ends ``delay`` seconds (on the run's clock) after it was created; its answers are the
ones :class:`~chainfleet.providers.sim.SimProvider` gives online (the same text function, the
same token counts), so a chain in batch mode on sim gives the same outputs as online; an agent's
turn is answered by :meth:`SimProvider.answer` (tool calls, then the answer), as online. Jobs live
in this process only: after a restart an unknown job reads as expired and its requests go into
a new one (the sim-server keeps its jobs across a client's restart, for tests of resume).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

from chainfleet.errors import ServerError
from chainfleet.providers.base import Completion
from chainfleet.providers.batch.base import BatchAdapter, BatchExpired, BatchItem, BatchStatus, Outcome
from chainfleet.providers.sim import SimProvider, sim_text
from chainfleet.sim import text as simtext

__all__ = ["SimBatchAdapter"]


class SimBatchAdapter(BatchAdapter):
    """The sim model's batch jobs, in memory."""

    max_requests = 100_000
    max_bytes = 256 * 2**20
    name = "sim"

    def __init__(self, provider: SimProvider, *, delay: float = 1.0) -> None:
        self.provider = provider
        self.delay = delay
        self._jobs: dict[str, tuple[float, list[BatchItem]]] = {}
        self._numbers = itertools.count(1)

    def line(self, item: BatchItem) -> dict[str, Any]:
        r = item.request
        line: dict[str, Any] = {
            "custom_id": item.custom_id,
            "model": r.model,
            "system": r.system,
            "prompt": r.prompt,
        }
        if r.messages is not None:  # an agent's turn: its conversation and tools
            line.update(messages=list(r.messages), tools=list(r.tools))
        return line

    async def create(self, chunk: list[BatchItem], file_id: str | None, *, chunk_id: str) -> str:
        batch_id = f"simbatch_{next(self._numbers)}_{chunk_id}"
        self._jobs[batch_id] = (self.provider.clock.now(), list(chunk))
        return batch_id

    async def poll(self, batch_id: str) -> BatchStatus:
        job = self._jobs.get(batch_id)
        if job is None:  # made by an earlier process: gone with it
            return BatchStatus(
                state="expired",
                ended=True,
                failed=True,
                error=BatchExpired(
                    f"sim batch {batch_id} is unknown to this process (sim batches live in memory)"
                ),
            )
        done = self.provider.clock.now() - job[0] >= self.delay
        state = "completed" if done else "in_progress"
        return BatchStatus(state=state, ended=done, counts={"total": len(job[1])})

    async def results(self, batch_id: str, status: BatchStatus) -> AsyncIterator[tuple[str, Outcome]]:
        _, chunk = self._jobs.pop(batch_id, (0.0, []))
        for item in chunk:
            yield item.custom_id, self._answer(item)

    def _answer(self, item: BatchItem) -> Outcome:
        r, s = item.request, self.provider.settings
        if any(text in r.prompt for text in s.fail_on):
            return ServerError("simulated 500 Internal Server Error", status=500)
        if r.messages is not None:  # an agent's turn: tool calls or its answer, as online
            return self.provider.answer(r)
        text = sim_text(r.prompt, r.system, s.seed, r.max_tokens, r.model)
        prompt_tokens = simtext.count_tokens(r.prompt)
        if r.system:
            prompt_tokens += simtext.count_tokens(r.system)
        return Completion(
            text=text, input_tokens=prompt_tokens, output_tokens=simtext.count_tokens(text), model=r.model
        )
