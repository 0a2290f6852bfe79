"""`chainfleet` as a child process against an in-process sim-server: the environment that
points it at the server, start/finish, and waiting on the server's own counts. Shared by the
tests that kill, interrupt and resume real runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from waiting import wait_until

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
        wait_until(lambda: sim.stats()["ok"] >= count, "the run did not get that far", timeout, poll=0.01)

    return env, start, finish, wait_for_ok


def point_sdks_at(server: SimServerThread, monkeypatch: Any, key: str) -> SimServerThread:
    """The shared in-process server reset to a clean state (its settings back to the defaults
    with ``key`` as the one API key), and the official SDKs' environment pointing at it with no
    proxy in the way: the per-test fixture of the tests that drive the real SDKs."""
    server.configure(**SimServerSettings(api_keys=(key,)).model_dump())
    server.reset()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    return server
