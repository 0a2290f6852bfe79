"""The output folder's owner: opening the run store (and the shared response cache) in it.

Everything that writes into an output folder goes through here, so the rules about what may be
written where live in one place: a folder that holds a run is continued only on purpose, and a
file there that is not a run store is never touched.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Literal

from .errors import ConfigError
from .store import RunStore, StoreError

__all__ = ["open_cache", "open_store"]


def open_store(out: str | os.PathLike[str], *, resume: bool) -> RunStore:
    """The run store of output folder ``out``. A folder that already holds a run is continued
    only with ``resume``; a file there that is not a run store is never touched."""
    out_dir = Path(out)
    path = out_dir / "run.db"
    existed = path.exists()
    if resume and not existed:
        raise ConfigError("nothing to resume here: no run.db (run without --resume first)", where=str(out))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        store = RunStore.open(path)
    except StoreError as exc:
        raise ConfigError(f"{exc}; nothing was changed", where=str(path)) from exc
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot write the output folder: {exc}", where=str(out)) from exc
    runs = store.runs() if existed else []
    if runs and not resume:
        store.close()
        last = runs[-1]
        done = last["items"].get("succeeded", 0)
        raise ConfigError(
            f"already holds run {last['run_id']} ({done} items done, {last['status']}); add --resume "
            "to continue it, or give another --out",
            where=str(out),
        )
    return store


def open_cache(cache: str | os.PathLike[str] | bool | None) -> RunStore | None | Literal[False]:
    """The response cache: False (off), a shared folder's cache.db, or None (the run's store)."""
    if cache is False:
        return False
    if cache is None or cache is True:
        return None
    folder = Path(cache)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return RunStore.open(folder / "cache.db")
    except StoreError as exc:
        raise ConfigError(f"{exc}; nothing was changed", where=str(folder / "cache.db")) from exc
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(f"cannot use the cache folder: {exc}", where=str(cache)) from exc
