"""Bespoke Curator as a peer in ``benchmarks/rate_limits.py``'s shared-key scenario (issue 23).

``--peer curator`` runs, after chainfleet's jobs and on the same server model, ``jobs`` Curator
jobs on the same key: each one a process of Curator's own venv running
``benchmarks/peers/curator_job.py`` (three ``curator.LLM`` passes, told nothing,
``max_concurrent_requests`` = the benchmark's -c). The processes are started and left to import
Curator before the server is reset and the clock starts; then all are told to go at once. The
server's counts give the 429 share and the share of the limit held, as for every tool; each
job's share is its calls/s over its own run (its wall time as it measured it).

The venv: ``benchmarks/peers/setup.sh`` makes it at ``$CHAINFLEET_PEER_VENVS/curator``
(default ``/work/peer-venvs/curator``). Without it the benchmark says how to make it and runs
chainfleet alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
JOB = HERE / "curator_job.py"
CALLS_PER_CHAIN = 3
READY_TIMEOUT = 300.0  # seconds for every job to import Curator on a loaded machine

#: Curator's variants: (max_tokens_per_minute, what it is told). The server announces no token
#: limit; told nothing, Curator assumes 100,000 tokens/min, which binds first here. The second
#: variant gives it a token limit far above any use, so the request limit it reads from the
#: headers is what paces it (told nothing about requests).
VARIANTS: tuple[tuple[int | None, str], ...] = (
    (None, "told nothing"),
    (10_000_000, "told nothing but max_tokens_per_minute=10M"),
)

Tool = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


def venv_python() -> Path:
    root = Path(os.environ.get("CHAINFLEET_PEER_VENVS", "/work/peer-venvs"))
    return root / "curator" / "bin" / "python"


def missing() -> str | None:
    """None when Curator's venv is there, else how to make it."""
    python = venv_python()
    if not python.exists():
        return f"no Curator venv at {python.parent.parent}: run benchmarks/peers/setup.sh"
    return None


def version() -> str:
    out = subprocess.run(
        [
            str(venv_python()),
            "-c",
            "from importlib.metadata import version as v; print(v('bespokelabs-curator'), v('openai'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    curator, _, openai = out.stdout.strip().partition(" ")
    return f"bespokelabs-curator {curator} (openai {openai})"


class CuratorJobs:
    """``jobs`` Curator processes, loaded and waiting; :meth:`tool` starts them together."""

    def __init__(
        self, base_url: str, key: str, *, chains: int, jobs: int, concurrency: int, tpm: int | None
    ) -> None:
        command = [
            str(venv_python()),
            str(JOB),
            "--base-url",
            base_url,
            "--key",
            key,
            "--chains",
            str(chains),
            "--concurrency",
            str(concurrency),
            "--wait",
            *(["--tpm", str(tpm)] if tpm else []),
        ]
        self.chains = chains
        self.logs = [open(os.devnull, "w") for _ in range(jobs)]  # noqa: SIM115 (closed in wait)
        self.procs = [
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
            for log in self.logs
        ]
        deadline = time.monotonic() + READY_TIMEOUT
        for proc in self.procs:
            assert proc.stdout is not None
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    self.kill()
                    raise RuntimeError(f"a Curator job exited while loading (exit {proc.wait()})")
                if line.strip() == "ready":
                    break

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()

    def _finish(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.wait()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            return {"items_ok": 0, "wall_s": 0.0, "exit": proc.returncode}
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def tool(self) -> Tool:
        async def run() -> tuple[int, dict[str, Any]]:
            try:
                for proc in self.procs:
                    assert proc.stdin is not None
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                results = await asyncio.gather(*(asyncio.to_thread(self._finish, p) for p in self.procs))
            finally:
                self.kill()
            done = [int(r["items_ok"]) for r in results]
            walls = [float(r["wall_s"]) for r in results]
            rates = [
                CALLS_PER_CHAIN * ok / wall if wall else 0.0 for ok, wall in zip(done, walls, strict=True)
            ]
            diagnosis: dict[str, Any] = {
                "jobs_items_ok": done,
                "jobs_wall_s": [round(w, 1) for w in walls],
                "jobs_calls_per_s": [round(r, 2) for r in rates],
                "share_spread": round(max(rates) / min(rates), 2) if min(rates) > 0 else None,
            }
            failures = [r.get("error") or f"exit {r['exit']}" for r in results if "error" in r or "exit" in r]
            if failures:
                diagnosis["jobs_failed"] = failures
            return sum(done), diagnosis

        return run


def run_shared(
    go: Callable[..., Any],
    url: str,
    *,
    chains: int,
    jobs: int,
    concurrency: int,
    key: str,
    server: dict[str, Any],
) -> Any:
    """Curator's ``jobs`` jobs through the benchmark's ``go`` (which resets the server and
    measures), or a line saying why not."""
    why = missing()
    if why:
        print(f"  skipped curator: {why}", flush=True)
        return None
    result = None
    for tpm, told in VARIANTS:
        print(f"  loading {jobs} Curator jobs ({version()}) ...", flush=True)
        procs = CuratorJobs(f"{url}/v1", key, chains=chains, jobs=jobs, concurrency=concurrency, tpm=tpm)
        try:
            result = go(
                "curator",
                f"{jobs} jobs (processes), max_concurrent_requests={concurrency}, {told}",
                procs.tool(),
                count=jobs * chains,
                **server,
            )
        finally:
            procs.kill()
    return result


if __name__ == "__main__":  # a quick check of the venv: python benchmarks/peers/curator.py
    print(missing() or version())
    sys.exit(0)
