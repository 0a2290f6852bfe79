"""`chainfleet` as a child process against an in-process sim-server: the environment that
points it at the server, start/finish, and waiting on the server's own counts. Shared by the
tests that kill, interrupt and resume real runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chainfleet.sim.server import SimServerThread

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")


def cli_helpers(key: str) -> tuple[Callable[..., Any], ...]:
    """``env, start, finish, wait_for_ok`` for children that use the API key ``key``."""

    def env(sim: SimServerThread) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", ""), "OPENAI_BASE_URL": f"{sim.url}/v1", "OPENAI_API_KEY": key}

    def start(sim: SimServerThread, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [CHAINFLEET, *args, "-q"], env=env(sim), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def finish(sim: SimServerThread, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CHAINFLEET, *args, "-q"], env=env(sim), capture_output=True, text=True, timeout=120, check=False
        )

    def wait_for_ok(sim: SimServerThread, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while sim.stats()["ok"] < count:
            assert time.monotonic() < deadline, "the run did not get that far"
            time.sleep(0.01)

    return env, start, finish, wait_for_ok
