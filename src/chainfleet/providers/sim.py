"""The built-in simulated model ``sim``: offline, free, deterministic.

Text comes from :func:`chainfleet.simtext.generate`, a function of (seed, model, system, prompt)
only, so the same chain gives the same outputs at any concurrency and in any order. Latency is
``latency`` seconds plus up to ``jitter`` more (also a function of the prompt). With
``error_rate`` set, calls fail with a simulated 500 (a retryable ``ServerError``); whether the
n-th call of a given prompt fails is decided by (seed, prompt, n), so failures too are the same
from run to run whatever the interleaving.
"""

from __future__ import annotations

import hashlib

from .. import simtext
from ..clock import Clock, SystemClock
from ..errors import ServerError
from ..pipeline import SimSettings
from .base import Completion, CompletionRequest, Provider

__all__ = ["SimProvider"]


def _unit(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts`` (stable across processes)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class SimProvider(Provider):
    """The simulated model, with the pipeline's ``sim:`` settings."""

    kind = "sim"

    def __init__(self, settings: SimSettings | None = None, *, clock: Clock | None = None) -> None:
        self.settings = settings or SimSettings()
        self.clock = clock or SystemClock()
        # n-th call per prompt, kept only while a prompt keeps failing (bounded by in-flight work)
        self._failures: dict[str, int] = {}

    async def complete(self, request: CompletionRequest) -> Completion:
        s = self.settings
        key = f"{request.model}\x00{request.system}\x00{request.prompt}"
        delay = s.latency
        if s.jitter:
            delay += s.jitter * _unit(s.seed, "jitter", key)
        if delay > 0:
            await self.clock.sleep(delay)
        if s.error_rate:
            nth = self._failures.get(key, 0)
            if _unit(s.seed, "fail", key, nth) < s.error_rate:
                self._failures[key] = nth + 1
                raise ServerError(
                    "simulated 500 Internal Server Error (sim error_rate)", status=500
                )
            self._failures.pop(key, None)
        text = simtext.generate(
            request.prompt,
            system=request.system,
            seed=s.seed,
            max_tokens=request.max_tokens,
            model=request.model,
        )
        prompt_tokens = simtext.count_tokens(request.prompt)
        if request.system:
            prompt_tokens += simtext.count_tokens(request.system)
        return Completion(
            text=text,
            input_tokens=prompt_tokens,
            output_tokens=simtext.count_tokens(text),
            model=request.model,
        )

    def __repr__(self) -> str:
        return f"SimProvider({self.settings!r})"
