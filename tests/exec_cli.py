"""``chainfleet`` (this checkout's sources, not an installed copy) as a child process pointed at
a sim-server: what the tests of ``chainfleet exec`` share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chainfleet.sim.server import SimServerThread

#: the API key the exec tests' sim-servers accept
KEY = "sk-exec-test-key-0000000001"

#: this checkout's sources, first on the children's path
SRC = str(Path(__file__).resolve().parents[1] / "src")

#: ``python -c`` that runs the chainfleet command from SRC
COMMAND = [
    sys.executable,
    "-c",
    "import sys; from chainfleet.cli import main; sys.argv[0] = 'chainfleet'; main()",
]


def exec_env(sim: SimServerThread, **extra: str) -> dict[str, str]:
    """A child's environment: PATH, this checkout's sources, the sim-server and its key."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": SRC,
        "OPENAI_BASE_URL": f"{sim.url}/v1",
        "OPENAI_API_KEY": KEY,
        **extra,
    }


def start(sim: SimServerThread, *args: str, cwd: Path, **env: str) -> subprocess.Popen[str]:
    """``chainfleet ARGS`` started (in its own process group), not awaited."""
    return subprocess.Popen(
        [*COMMAND, *args],
        env=exec_env(sim, **env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def chainfleet(
    sim: SimServerThread, *args: str, cwd: Path, timeout: float = 180, **env: str
) -> subprocess.CompletedProcess[str]:
    """``chainfleet ARGS`` run to its end."""
    return subprocess.run(
        [*COMMAND, *args], env=exec_env(sim, **env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
