"""What the sim server is told: its settings, one frozen value object changed whole at run time.

:class:`SimServerSettings` is what ``chainfleet sim-server``'s options build, what
``POST /sim/config`` validates (a bad value is a 422 naming it) and what every part of the
server reads: the limits (:mod:`chainfleet.sim.limits`), the faults (:mod:`chainfleet.sim.faults`),
the queue (:mod:`chainfleet.sim.queue`) and the batch jobs (:mod:`chainfleet.sim.batch`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chainfleet.sim.call import mask

__all__ = ["SimServerSettings"]


class SimServerSettings(BaseModel):
    """How the sim server behaves; all of it can change at run time (``POST /sim/config``).

    - ``latency``, ``jitter``: each answer takes ``latency`` plus up to ``jitter`` seconds;
    - ``seed``: of the text (as in :func:`~chainfleet.sim.text.generate`) and of the fault draws;
    - ``rpm``, ``tpm``: requests and tokens per minute (see :mod:`chainfleet.sim.bucket`), None:
      no limit;
    - ``window``: strict mode, the limits enforced over sliding windows of this many seconds
      and of a minute instead (see :mod:`chainfleet.sim.window`);
    - ``bucket_seconds``: each limit a token bucket holding this many seconds' worth, whose
      ``remaining`` headers give its level (see :mod:`chainfleet.sim.shortbucket`);
    - ``error_rate`` (500), ``overload_rate`` (503 OpenAI, 529 Anthropic), ``slow_rate`` (wait
      ``slow_seconds`` first), ``drop_rate`` (close the connection unanswered),
      ``malformed_rate`` (200 with a body that is not JSON): shares of admitted requests, together
      at most 1;
    - ``max_in_flight``: above it, 503 "server busy";
    - ``slots``: queueing mode, at most N served at once and the rest wait inside the server, as
      llama.cpp and Ollama do (:mod:`chainfleet.sim.queue`); None: every request at once;
    - ``api_keys``, ``models``: the accepted ones; empty accepts any (non-empty) key or model;
    - ``quota_tokens``: once the tokens served (input + output) reach it, "insufficient quota";
    - ``invalid_output_rate``: the share of structured replies that break their schema (cut-off
      JSON, a missing required property), decided by (seed, request text), to rehearse repairs.

    The ``repr`` never shows a key.

    >>> SimServerSettings(rpm=500, tpm=200_000, error_rate=0.02).rpm
    500
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency: float = Field(0.0, ge=0)
    jitter: float = Field(0.0, ge=0)
    seed: int = 0
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    window: float | None = Field(None, gt=0)
    bucket_seconds: float | None = Field(None, gt=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    overload_rate: float = Field(0.0, ge=0, le=1)
    slow_rate: float = Field(0.0, ge=0, le=1)
    slow_seconds: float = Field(30.0, ge=0)
    drop_rate: float = Field(0.0, ge=0, le=1)
    malformed_rate: float = Field(0.0, ge=0, le=1)
    max_in_flight: int | None = Field(None, gt=0)
    slots: int | None = Field(None, gt=0)
    api_keys: tuple[str, ...] = Field((), repr=False)
    models: tuple[str, ...] = ()
    quota_tokens: int | None = Field(None, ge=0)
    invalid_output_rate: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _rates_fit(self) -> SimServerSettings:
        if self.window is not None and self.bucket_seconds is not None:
            raise ValueError("window and bucket_seconds are two limiter models: give one of them")
        if sum(self.fault_rates().values()) > 1 + 1e-9:
            raise ValueError(
                "error_rate, overload_rate, slow_rate, drop_rate and malformed_rate add up to over 1"
            )
        return self

    def fault_rates(self) -> dict[str, float]:
        """The random faults in the order they are drawn."""
        return {
            "error": self.error_rate,
            "overload": self.overload_rate,
            "slow": self.slow_rate,
            "drop": self.drop_rate,
            "malformed": self.malformed_rate,
        }

    def public(self) -> dict[str, Any]:
        """The settings as JSON, keys masked (what ``POST /sim/config`` answers)."""
        data = self.model_dump(mode="json")
        data["api_keys"] = [mask(key) for key in self.api_keys]
        return data
