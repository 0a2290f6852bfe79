"""What a run keeps on disk: the run store (``run.db``, SQLite) and the output folder around it.

Everything a run must not lose is written here as it happens, keyed by (run, item, stage) and
safe to repeat, so a killed run resumes without paying for a call twice and a report can be made
from the store alone. The names below are the package's surface; its modules, read bottom up:

- :mod:`~chainfleet.store.atomic`: one transaction for a whole schema change, and the kill
  points that test it;
- :mod:`~chainfleet.store.migrations`: the schema, as numbered migrations applied on open;
- :mod:`~chainfleet.store.rows`: the rows as values (:class:`CallRow`, :class:`ItemRecord`...);
- :mod:`~chainfleet.store.runstore`: :class:`RunStore`, the runs, items, stage results, calls
  and cache;
- :mod:`~chainfleet.store.sessions`: every process that worked on a run;
- :mod:`~chainfleet.store.review_queue`: outputs waiting for a person, and their decisions;
- :mod:`~chainfleet.store.batch_ledger`: batch mode's chunks and requests;
- :mod:`~chainfleet.store.stats`: a run's counters and latency percentiles;
- :mod:`~chainfleet.store.folder`: the output folder's one owner (a lock), and opening its store;
- :mod:`~chainfleet.store.diskfull`: telling a full disk from other errors.

Example::

    from chainfleet.store import RunStore

    with RunStore.open("out/run.db") as store:
        for record in store.items("r1"):
            print(record.to_json())
"""

from chainfleet.store.batch_ledger import BatchLedger, RequestResult
from chainfleet.store.folder import open_cache, open_store
from chainfleet.store.review_queue import AlreadyDecided, Decision, Entry, ReviewError, ReviewQueue
from chainfleet.store.rows import CallRow, ItemRecord, RevisionRow, StageHit
from chainfleet.store.runstore import RunStore, StoreError
from chainfleet.store.sessions import SessionRow, Sessions
from chainfleet.store.stats import RunStats, StageStats

__all__ = [
    "AlreadyDecided",
    "BatchLedger",
    "CallRow",
    "Decision",
    "Entry",
    "ItemRecord",
    "RequestResult",
    "ReviewError",
    "ReviewQueue",
    "RevisionRow",
    "RunStats",
    "RunStore",
    "SessionRow",
    "Sessions",
    "StageHit",
    "StageStats",
    "StoreError",
    "open_cache",
    "open_store",
]
