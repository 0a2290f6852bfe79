"""A run's settings as one value: what ``chainfleet run``'s flags and ``arun``'s keywords say.

The CLI builds a :class:`RunSettings` from its flags, the Python API accepts one (or the same
names as keyword shortcuts), and the runner reads it; nothing else carries a run's options
around. It is frozen: a changed setting is a new value (:meth:`RunSettings.replace`).

Example::

    from chainfleet import RunSettings, run

    settings = RunSettings(concurrency=10, max_attempts=6, rpm=500)
    report = run(pipeline, "topics.txt", settings, out="runs/today")
    report = run(pipeline, "topics.txt", concurrency=10, rpm=500)   # the same, as shortcuts
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["MAX_CONCURRENCY", "ItemFiles", "RunSettings", "user_cache"]

#: the most chains in flight a run may ask for: each one is a task, and past this no provider
#: answers faster, while ten million of them take gigabytes before the first call
MAX_CONCURRENCY = 10_000

#: which readable per-item files the output folder gets: ``auto`` is all of them for runs of at
#: most 10,000 items
ItemFiles = Literal["auto", "all", "none"]


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How one run goes. Every field has the default a plain ``chainfleet run`` uses.

    - ``concurrency``: chains in flight (None: the pipeline's ``concurrency:``; ``"auto"``
      adapts to what the server takes, up to ``max_concurrency``).
    - ``model``: every LLM stage's model (``--model``); ``rpm``/``tpm``: every model's told
      limits (else the pipeline's ``limits:``, else what the provider's headers say);
      ``limit_group``: share each model's budget with other jobs on this machine.
    - ``max_attempts`` per call; ``retry_passes`` over the failed items after the main pass.
    - ``resume`` the run in the output folder (``run_id``: which one; None: the latest);
      ``force`` a non-empty folder that holds no run; ``check_input``: read the whole input once
      before the first call.
    - ``cache``: None keeps a response cache of deterministic real-provider calls in the run's
      store, a folder shares one across runs, False turns it off.
    - ``max_cost`` (USD) and ``max_tokens``: the budget that stops admission; a cost budget
      needs every model's price (the built-in table, ``prices``, or the pipeline's ``prices:``).
    - ``prices``: ``{model: (input, output)}`` USD per million tokens over the built-in table
      (``--prices FILE``); the pipeline's own ``prices:`` wins over it.
    - ``backend`` (``local`` or ``ray``) with its ``address`` and ``workers``; ``batch`` puts
      every LLM stage in batch mode.
    - ``item_files`` and ``parquet``: what the output folder holds besides results.jsonl.
    - ``otel``: export OpenTelemetry traces (also on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is
      set) to ``otel_endpoint`` (OTLP/HTTP), keeping ``otel_sample`` of the items (failed ones
      always), with prompt and reply text when ``otel_content``.
    """

    concurrency: int | Literal["auto"] | None = None
    max_concurrency: int = 64
    model: str | None = None
    max_attempts: int = 4
    retry_passes: int = 1
    rpm: float | None = None
    tpm: float | None = None
    limit_group: str | None = None
    resume: bool = False
    run_id: str | None = None
    force: bool = False
    check_input: bool = True
    cache: str | os.PathLike[str] | bool | None = None
    max_cost: float | None = None
    max_tokens: int | None = None
    prices: Mapping[str, tuple[float, float]] | None = None
    backend: str = "local"
    address: str | None = None
    workers: int | None = None
    batch: bool = False
    item_files: ItemFiles = "auto"
    parquet: bool = False
    #: how long a text of an agent's trajectory in results.jsonl may be (the store keeps it whole)
    trajectory_chars: int = 2000
    otel: bool = False
    otel_endpoint: str | None = None
    otel_sample: float = 1.0
    otel_content: bool = False

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with ``changes``; an unknown name is a ``TypeError`` naming it."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown run setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        return dataclasses.replace(self, **changes) if changes else self


def user_cache(*parts: str) -> Path:
    """A folder in the user's cache (``$XDG_CACHE_HOME/chainfleet/...``, else
    ``~/.cache/chainfleet/...``): limit groups' files, compiled templates. Not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "chainfleet", *parts)
