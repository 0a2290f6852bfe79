"""What the driver and its Ray workers send each other: plain, picklable values.

Every exchange is started by the driver (``exchange`` on the worker actor), so the driver never
has to be reachable from the cluster and stays the only writer of the run store:

- driver -> worker: chains to run (:class:`ChainTask`, in small batches, only as many as the
  run's ``concurrency`` lets in, with the seconds since the run's start on the driver's clock,
  the scale call times and trace notes are kept on), the number of the last event it has
  committed, answers to the worker's look-ups, and whether the run is stopping;
- worker -> driver (:class:`Inbound`): numbered events in the order they happened (store
  writes: stage results, attempts, tries and gate results, response-cache writes), look-ups (a
  stage result or try to reuse, a cached response), the chains that finished, and its counters
  since the last exchange. Both are :class:`StoreCall` values: the stage code calls the same
  store methods on a worker as in a local run, and the driver makes those calls on its store.

A stage result counts as done on the worker (its chain goes on) only once the driver has said it
committed the event carrying it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chainfleet.errors import CallError

__all__ = [
    "READS",
    "REVIEW_READS",
    "REVIEW_WRITES",
    "JOURNAL_WRITES",
    "TURN_READS",
    "TURN_WRITES",
    "WRITES",
    "ChainTask",
    "Finished",
    "Inbound",
    "Outbound",
    "StatsDelta",
    "StoreCall",
]


@dataclass
class ChainTask:
    """One admitted chain, sent to a worker: its item and the stages already done."""

    index: int
    id: str
    line: int
    fields: dict[str, Any]
    outputs: dict[str, str]
    next_stage: int
    #: a code chain's journal entries for the item, as committed (its calls replay from them)
    journal: list[Any] = field(default_factory=list)


#: store methods a worker's events may call on the driver's run store (writes) ...
WRITES = frozenset({"save_stage", "save_call", "save_revision", "set_gates", "cache_put"})
#: ... and the look-ups it may ask of it (reads)
READS = frozenset({"find_stage", "find_revision", "cache_get"})
#: the review queue's (``target="review"``): decisions read, entries queued, decisions taken
REVIEW_WRITES = frozenset({"enqueue", "mark_taken"})
REVIEW_READS = frozenset({"feedback", "match"})
#: an agent's steps (``target="turns"``, :class:`~chainfleet.store.agent_turns.AgentTurns`):
#: each model turn and tool result written as it completes, and read back on resume
TURN_WRITES = frozenset({"save"})
TURN_READS = frozenset({"load"})
#: the journal's (``target="journal"``, a code chain's calls and logs) and the limiter actor of
#: a model a code chain calls (``target="limits"``: ``of``)
JOURNAL_WRITES = frozenset({"put", "log"})


@dataclass
class StoreCall:
    """One call of a :class:`~chainfleet.store.runstore.RunStore` method, made on the driver: on the run
    store (``target="store"``), the response cache (``"cache"``), or the run's review queue
    (``"review"``: a :class:`~chainfleet.store.review_queue.ReviewQueue` method)."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    target: str = "store"


@dataclass
class Finished:
    """A chain that ran its last stage, or failed (``error``)."""

    index: int
    error: CallError | None = None
    error_stage: str | None = None
    #: the stage where the item waits for a person (``review:``), when it does
    parked: str | None = None
    #: the chain's seconds in this run on the worker (a code chain's: the item's whole time)
    seconds: float = 0.0
    #: what the chain did, for its trace (tracing on: a :class:`~chainfleet.trace.notes.ItemTrace`
    #: whose clock readings are seconds since the run's start; the driver's tracer draws it)
    trace: Any = None


@dataclass
class StatsDelta:
    """A worker's counters since its last exchange (``RunStats`` fields that add up)."""

    counts: dict[str, float] = field(default_factory=dict)
    cost_usd: float | None = 0.0
    #: per stage: (calls, failed, new service times, chains at the stage now)
    stages: dict[str, tuple[int, int, list[float], int]] = field(default_factory=dict)
    #: a code chain's calls on paths chainfleet cannot read, per path (for the report's warning)
    passthrough: dict[str, int] = field(default_factory=dict)
    #: per route: (per target, its new counts; new moves, (kind, from, to, reason) -> calls)
    routes: dict[str, tuple[list[dict[str, int]], dict[tuple[str, str, str, str], int]]] = field(
        default_factory=dict
    )


@dataclass
class Outbound:
    """Driver -> worker, with each ``exchange``."""

    committed: int
    answers: dict[int, Any] = field(default_factory=dict)
    halted: bool = False


@dataclass
class Inbound:
    """Worker -> driver, the answer to one ``exchange``."""

    #: (number, write) in the order they happened
    events: list[tuple[int, StoreCall]] = field(default_factory=list)
    #: (number, read): each answered in the next exchange's ``answers``
    lookups: list[tuple[int, StoreCall]] = field(default_factory=list)
    finished: list[Finished] = field(default_factory=list)
    stats: StatsDelta = field(default_factory=StatsDelta)
