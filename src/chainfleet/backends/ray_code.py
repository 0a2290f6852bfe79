"""The user's own chain (``my_chain.py:article``) on Ray workers: its function shipped, its
journal and its limiters the cluster's.

How the function travels: **by value, with Ray's cloudpickle** (:func:`ship`). The module the
function lives in is registered with ``cloudpickle.register_pickle_by_value`` before it is
pickled, so its code and the module's globals (helper functions, constants) travel in the
worker's spec and the worker never imports the user's file. The other way, sending the module
path and the function's name and importing them again in each worker, needs the file at the
same path on every node (and ``chainfleet.run(fn, ...)`` from a notebook has no file at all).
By value works on a multi-node cluster and for functions made at run time. What it cannot ship
is said before any call (exit 2): a module global that does not pickle (a lock, an open
client) makes the run stop with one line naming it. Packages the chain imports (openai,
langchain ...) and other modules of the user's own that the chain file imports travel by name
and must be installed on the workers, as chainfleet itself must be.

The journal on a worker (:class:`RemoteJournal`): the driver sends each item's journal entries
with the item (one read per item, not per call); a look-up is answered from them; a new entry
or a log line is an event the driver writes into the run store, and ``store.durable()`` waits
until it is committed there, exactly as a YAML stage's result.

The limiters: the models a code chain calls are known only when it calls them, so a worker
asks the driver for a model's limiter actor on first use (:class:`CodeLimiter`); the driver
makes one actor per model, told or learned, shared by every worker, and reports it.
"""

from __future__ import annotations

import importlib
import sys
import sysconfig
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chainfleet.backends.ray_limits import LeasedLimiter
from chainfleet.backends.ray_wire import StoreCall
from chainfleet.errors import ConfigError
from chainfleet.redact import clip

if TYPE_CHECKING:
    from chainfleet.clock import Clock
    from chainfleet.store.journal import JournalEntry

__all__ = ["CodeLimiter", "RemoteJournal", "placeholder", "ship", "unship"]


async def placeholder(item: Any, fleet: Any) -> Any:
    """Stands in for the user's function in the pipeline's data (which travels by name); the
    worker puts the shipped function back (:func:`unship`)."""
    raise RuntimeError("the chain's function was not shipped")  # pragma: no cover - a bug of ours


def _installed(path: str | None) -> bool:
    """Whether a module file lies in an installed location (site-packages, the stdlib)."""
    if not path:
        return True  # a built-in module
    resolved = Path(path).resolve()
    roots = {sysconfig.get_paths()[name] for name in ("purelib", "platlib", "stdlib", "platstdlib")}
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots if root)


def ship(fn: Callable[..., Any]) -> bytes:
    """``fn`` pickled by value (see the module docstring); ``ConfigError`` when it cannot be.
    Called once the driver is connected (Ray is imported by then, as :mod:`ray_cluster` wants)."""
    cloudpickle = _cloudpickle()

    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    by_value = (
        module is not None
        and module.__name__ != "__main__"
        and not _installed(getattr(module, "__file__", None))
    )
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        data: bytes = cloudpickle.dumps(fn)
    except Exception as exc:  # the user's module holds something that cannot travel
        name = getattr(fn, "__qualname__", repr(fn))
        raise ConfigError(
            f"the chain {name!r} cannot be shipped to the Ray workers: {type(exc).__name__}: "
            f"{clip(exc, 200)} (make such globals inside the function, or run it locally)",
            where="--backend ray",
        ) from None
    finally:
        if by_value and module is not None:
            cloudpickle.unregister_pickle_by_value(module)
    return data


def unship(data: bytes) -> Callable[..., Any]:
    """The function :func:`ship` pickled."""
    fn: Callable[..., Any] = _cloudpickle().loads(data)
    return fn


def _cloudpickle() -> Any:
    """Ray's own copy of cloudpickle (the one Ray pickles actors' arguments with)."""
    return importlib.import_module("ray.cloudpickle")


class RemoteJournal:
    """A worker's journal: the entries the driver sent with each item, and new ones sent back
    as events (see the module docstring). The same methods as
    :class:`~chainfleet.store.journal.Journal` that the code chains call."""

    def __init__(self, add: Callable[[StoreCall], None]) -> None:
        self._add = add
        #: item index -> (hash, occurrence) -> entry
        self.known: dict[int, dict[tuple[str, int], JournalEntry]] = {}

    def load(self, index: int, entries: list[JournalEntry]) -> None:
        """The item's entries as the driver committed them (replacing what was held)."""
        self.known[index] = {(entry.hash, entry.occurrence): entry for entry in entries}

    def forget(self, index: int) -> None:
        self.known.pop(index, None)

    def get(self, run_id: str, index: int, digest: str, occurrence: int) -> JournalEntry | None:
        return self.known.get(index, {}).get((digest, occurrence))

    def put(self, run_id: str, index: int, entry: JournalEntry) -> None:
        self.known.setdefault(index, {})[(entry.hash, entry.occurrence)] = entry
        self._add(StoreCall("put", (run_id, index, entry), target="journal"))

    def log(self, run_id: str, index: int, item_id: str, text: str) -> None:
        self._add(StoreCall("log", (run_id, index, item_id, text), target="journal"))


class CodeLimiter(LeasedLimiter):
    """A leased limiter whose actor is asked of the driver on the first lease (a model the
    chain calls is known only then)."""

    def __init__(
        self, spec: str, resolve: Callable[[str], Awaitable[Any]], *, clock: Clock | None = None
    ) -> None:
        super().__init__(None, clock=clock)
        self.spec = spec
        self._resolve = resolve

    async def _lease(self, tokens: int, *, give: bool) -> None:
        if self.actor is None:
            self.actor = await self._resolve(self.spec)
        await super()._lease(tokens, give=give)

    def cooldown(self, seconds: float) -> None:
        if self.actor is None:  # cannot happen: a call leases before it can see a 429
            return
        super().cooldown(seconds)
