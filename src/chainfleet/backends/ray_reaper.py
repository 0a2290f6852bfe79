"""The reaper of a local Ray node: what the run started goes when the run goes, kill -9 included.

A Ray node started by a chainfleet process (``--backend ray`` without ``--address``) is that
process's children: the GCS server, the raylet and, under the raylet, Ray's DashboardAgent and
RuntimeEnvAgent. ``ray.shutdown()`` ends them on a normal exit. After a ``kill -9`` of the
driver, the GCS and the raylet notice and exit, but the two agents were left holding four
loopback ports for 15-90 s (issue 22).

So :func:`start_reaper` starts this file as a small watcher process, with a pipe whose only
writer is the driver: the kernel closes it when the driver dies, however it dies. Until then the
watcher notes, once a second, every Ray process descended from the driver (pid and start time,
so a reused pid is never taken for one of them; the run's other children are left alone); at
end of file it sends SIGTERM, then SIGKILL after a second, to those of them still alive. On a
normal exit they are gone already and it has nothing to do.

It reads ``/proc`` (Linux); elsewhere it is not started. It is run by path, with ``-I`` (no
site packages): it imports nothing of chainfleet's and nothing but the standard library.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

__all__ = ["start_reaper"]


def start_reaper() -> subprocess.Popen[bytes] | None:
    """Start the watcher of this process's descendants (None where there is no ``/proc``)."""
    if not os.path.isdir("/proc/self"):
        return None
    return subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C to the run's terminal is the run's, not the watcher's
    )


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), int(fields[19])


def _is_ray(pid: int) -> bool:
    """Whether ``pid`` is one of Ray's processes (``ray::...`` or a program under Ray's
    package): the run's other children (a sim-server, an MCP server, a command) are not ours."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            command = file.read()
    except OSError:
        return False
    return command.startswith(b"ray::") or b"/ray/" in command


def _descendants(root: int) -> dict[int, int]:
    """Every live Ray process under ``root``: pid -> start time."""
    parents: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            parents.setdefault(stat[0], []).append(int(name))
            started[int(name)] = stat[1]
    found: dict[int, int] = {}
    todo = list(parents.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid != os.getpid() and pid not in found and pid in started:
            found[pid] = started[pid]
            todo.extend(parents.get(pid, ()))
    return {pid: start for pid, start in found.items() if _is_ray(pid)}


def _reap(seen: dict[int, int]) -> None:
    """SIGTERM, then SIGKILL a second later, to the processes of ``seen`` still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid, start in seen.items() if (stat := _stat(pid)) is not None and stat[1] == start]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        if not alive:
            return
        time.sleep(1.0)


def main(driver: int) -> None:
    seen: dict[int, int] = {}
    while True:
        seen.update(_descendants(driver))
        ready, _, _ = select.select([0], [], [], 1.0)
        if ready and not os.read(0, 4096):  # end of file: the driver is gone
            break
    _reap(seen)


if __name__ == "__main__":
    main(int(sys.argv[1]))
