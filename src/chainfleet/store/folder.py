"""The output folder's owner: one process at a time, and never a folder that is not a run.

Everything that writes into an output folder goes through here, so the rules about what may be
written where live in one place:

- **One owner.** Before anything is written, the process takes an exclusive ``flock`` on
  ``OUT/.chainfleet.lock`` and holds it until the run's output is written. A second process
  (a second ``run``, ``run --resume``, ``resume`` or ``report``) is refused at once with "OUT is
  in use by pid N since T" (exit 2), so no call is ever paid twice and no file is written by
  two hands. The OS drops the lock when its owner dies, however it dies (kill -9 included), so
  a dead owner's folder is simply taken over by the next process: there is no stale lock to
  clean up. Inside one process the hold is counted (the CLI holds it across the run and the
  salvage after a hard stop; the library holds it for one :func:`~chainfleet.runner.api.arun`).
- **Never someone else's files.** A folder that is not empty and holds no chainfleet run is
  refused (exit 2, nothing touched, not even the lock file created) unless ``force``.
- A folder that already holds a run is continued only with ``resume``; a ``run.db`` there that
  is not a run store is never touched.

Written by hand on ``fcntl.flock`` rather than a locking library: the whole job is one
system call whose release-on-death is the property we need, and it must not add a dependency.
Where ``fcntl`` does not exist (Windows) the folder is not locked.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from chainfleet.errors import ConfigError
from chainfleet.store.atomic import kill_point
from chainfleet.store.runstore import RunStore, StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no folder lock
    fcntl = None  # type: ignore[assignment]

P = ParamSpec("P")
T = TypeVar("T")

__all__ = [
    "LOCK_NAME",
    "Owner",
    "acquire",
    "check_folder",
    "held",
    "holds",
    "open_cache",
    "open_store",
    "owner",
    "release",
    "releasing_out",
]

#: the lock file in every output folder
LOCK_NAME = ".chainfleet.lock"
#: what makes a folder a chainfleet run's (besides the lock file)
RUN_FILES = ("run.db",)


@dataclass(frozen=True)
class Owner:
    """Who holds an output folder: a process id, and since when (seconds since the epoch)."""

    pid: int
    since: float

    def describe(self) -> str:
        return f"pid {self.pid} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"


@dataclass
class _Hold:
    fd: int
    count: int


_HELD: dict[str, _Hold] = {}


def _key(out: str | os.PathLike[str]) -> str:
    return os.path.realpath(out)


def check_folder(out: str | os.PathLike[str], *, force: bool = False) -> None:
    """Refuse a non-empty folder that holds no chainfleet run (unless ``force``), and a file."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError("is a file, not a folder; give a folder for --out", where=str(out))
    if force or not path.is_dir():
        return
    names = sorted(p.name for p in path.iterdir())
    if not names or LOCK_NAME in names or any(n in names for n in RUN_FILES):
        return
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    raise ConfigError(
        f"is not empty and holds no chainfleet run ({len(names)} entries: {shown}); nothing was "
        "touched. Give a new or empty --out, or add --force to write the run's files into it",
        where=str(out),
    )


def acquire(out: str | os.PathLike[str], *, force: bool = False) -> None:
    """Become the owner of output folder ``out`` (creating it), or raise ``ConfigError`` naming
    the process that owns it. Counted within a process: pair every call with :func:`release`."""
    key = _key(out)
    held = _HELD.get(key)
    if held is not None:
        held.count += 1
        return
    check_folder(out, force=force)
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(out) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write the output folder: {exc.strerror or exc}", where=str(out)) from exc
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = _read_owner(fd)
            os.close(fd)
            who = other.describe() if other else "another process"
            raise ConfigError(
                f"is in use by {who}; wait for it to end, or give another --out", where=str(out)
            ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {time.time():.3f}\n".encode(), 0)
    _HELD[key] = _Hold(fd, 1)


def release(out: str | os.PathLike[str]) -> None:
    """Give up one hold on ``out``; the last one unlocks it. Unknown folders are ignored."""
    key = _key(out)
    held = _HELD.get(key)
    if held is None:
        return
    held.count -= 1
    if held.count <= 0:
        del _HELD[key]
        os.close(held.fd)  # closing the descriptor drops the flock


@contextmanager
def held(out: str | os.PathLike[str], *, force: bool = False) -> Iterator[None]:
    """``with held(out):`` :func:`acquire` for the block, then :func:`release`."""
    acquire(out, force=force)
    try:
        yield
    finally:
        release(out)


def holds(out: str | os.PathLike[str]) -> int:
    """How many holds this process has on ``out`` (0: it does not own it)."""
    held = _HELD.get(_key(out))
    return held.count if held else 0


def releasing_out(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Decorate an async function taking ``out=``: whatever holds on ``out`` it takes and has
    not given back when it returns or raises are released (the run's store is opened holding
    the folder; the function's callers may add holds of their own, which they release)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        out = kwargs.get("out")
        before = holds(out) if isinstance(out, str | os.PathLike) else 0
        try:
            return await fn(*args, **kwargs)
        finally:
            if isinstance(out, str | os.PathLike):
                for _ in range(holds(out) - before):
                    release(out)

    return wrapper


def owner(out: str | os.PathLike[str]) -> Owner | None:
    """The live process holding ``out``, or None when no process does (its owner ended or died).

    For ``runs`` and ``report``: a run whose status says "running" but whose folder has no owner
    was killed."""
    path = Path(out) / LOCK_NAME
    if _key(out) in _HELD:
        return Owner(os.getpid(), time.time())
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if fcntl is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_owner(fd) or Owner(0, 0.0)
        return None
    finally:
        os.close(fd)


def _read_owner(fd: int) -> Owner | None:
    try:
        pid, since = os.pread(fd, 64, 0).decode("ascii").split()
        return Owner(int(pid), float(since))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def open_store(out: str | os.PathLike[str], *, resume: bool, force: bool = False) -> RunStore:
    """The run store of output folder ``out``, with ``out`` held (see :func:`acquire`; the
    caller releases it). A folder that already holds a run is continued only with ``resume``;
    a file there that is not a run store is never touched."""
    out_dir = Path(out)
    path = out_dir / "run.db"
    if resume and not path.exists():
        raise ConfigError("nothing to resume here: no run.db (run without --resume first)", where=str(out))
    acquire(out, force=force)
    try:
        store = _open_held(out, path, resume=resume)
        kill_point("store-created")  # tests: run.db made, its run not recorded yet
        return store
    except BaseException:
        release(out)
        raise


def _open_held(out: str | os.PathLike[str], path: Path, *, resume: bool) -> RunStore:
    existed = path.exists()  # looked at again now that no other process can create it
    if resume and not existed:
        raise ConfigError("nothing to resume here: no run.db (run without --resume first)", where=str(out))
    try:
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
