"""Never a traceback, never a runaway, in a real ``chainfleet`` process: the concurrency cap,
Ctrl-C, SIGTERM, a closed terminal and a broken stdout, each one clear line and the right exit
code, with nothing paid twice on resume."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chainfleet.sim.server import SimServerThread
from chainfleet.sim.settings import SimServerSettings
from waiting import wait_until

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHAINFLEET, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_a_concurrency_over_the_cap_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: t\nmodel: sim\nsim: {latency: 0}\ninput: topic\n"
        "stages:\n  - {name: a, prompt: 'A {{ topic }}'}\n",
        encoding="utf-8",
    )
    (tmp_path / "t.txt").write_text("x\ny\nz\n", encoding="utf-8")
    done = cli("run", "p.yaml", "-i", "t.txt", "-c", "10000000", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2
    assert "10,000,000 is over the cap of 10,000 chains in flight" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
    ok = cli("run", "p.yaml", "-i", "t.txt", "-c", "10000", "--out", "out", "-q", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert len((tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()) == 3


# -- signals ---------------------------------------------------------------------------------------

KEY = "sk-hardening-test-0123456789"

ITEMS = 12

PIPELINE = """\
name: content
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}."
    max_tokens: 100
  - name: write
    prompt: "Write on {{ topic }} from:\\n{{ research }}"
    max_tokens: 100
"""


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0.3))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread) -> SimServerThread:
    server.configure(**SimServerSettings(api_keys=(KEY,), latency=0.3).model_dump())
    server.reset()
    return server


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    (tmp_path / "content.yaml").write_text(PIPELINE, encoding="utf-8")
    (tmp_path / "topics.txt").write_text("".join(f"topic {i}\n" for i in range(ITEMS)), encoding="utf-8")
    return [str(tmp_path / "content.yaml"), "-i", str(tmp_path / "topics.txt")]


def sim_env(sim: SimServerThread) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "OPENAI_BASE_URL": f"{sim.url}/v1", "OPENAI_API_KEY": KEY}


def importing_chainfleet(pid: int) -> bool:
    """Whether the interpreter is past its own start-up and into chainfleet's imports (pydantic's
    compiled core is mapped): from there on, Ctrl-C is ours to handle."""
    try:
        return "pydantic_core" in Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0])
def test_an_early_ctrl_c_is_one_line_and_exit_130(
    sim: SimServerThread, files: list[str], tmp_path: Path, delay: float
) -> None:
    proc = subprocess.Popen(
        [CHAINFLEET, "run", *files, "--out", str(tmp_path / "out")],
        env=sim_env(sim),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if sys.platform.startswith("linux"):
        wait_until(lambda: importing_chainfleet(proc.pid), "python never got to chainfleet")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert "Ctrl-C" in stderr


def test_sigterm_says_sigterm_and_resume_pays_nothing_twice(
    sim: SimServerThread, files: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [CHAINFLEET, "run", *files, "-c", "2", "--out", str(out), "-q"],
        env=sim_env(sim),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: sim.stats()["ok"] >= 2, "the run did not start")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "SIGTERM received: stopping" in stderr and "send SIGTERM again to stop at once" in stderr
    assert "Ctrl-C" not in stderr and "Traceback" not in stderr
    assert f"chainfleet resume {out}" in stderr
    sim.configure(latency=0.01)
    done = subprocess.run(
        [CHAINFLEET, "resume", str(out), "-q"], env=sim_env(sim), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    paid = sim.stats()["completed_by_key"]
    assert sum(paid.values()) == 2 * ITEMS and set(paid.values()) == {1}


@pytest.mark.skipif(not hasattr(os, "fork") or not sys.platform.startswith("linux"), reason="needs a pty")
def test_a_closed_terminal_sighup_stops_cleanly_and_keeps_everything(
    sim: SimServerThread, files: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = [CHAINFLEET, "run", *files, "-c", "2", "--out", str(out)]
    pid, master = pty.fork()  # the child's controlling terminal is a real pty
    if pid == 0:  # pragma: no cover - the child
        os.execve(CHAINFLEET, argv, sim_env(sim))
    try:
        wait_until(lambda: sim.stats()["ok"] >= 2, "the run did not start")
        with contextlib.suppress(OSError):
            os.read(master, 65536)
    finally:
        os.close(master)  # the terminal goes away: the kernel sends SIGHUP
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == ITEMS and {"succeeded", "skipped"} <= {r["status"] for r in rows}
    assert (out / "report.json").exists()
    paid_before = sum(sim.stats()["completed_by_key"].values())
    assert paid_before >= 2
    sim.configure(latency=0.01)
    done = subprocess.run(
        [CHAINFLEET, "resume", str(out), "-q"], env=sim_env(sim), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    paid = sim.stats()["completed_by_key"]
    assert sum(paid.values()) == 2 * ITEMS and set(paid.values()) == {1}  # the calls in flight finished


def test_a_broken_stdout_does_not_change_a_finished_runs_exit_code(
    sim: SimServerThread, files: list[str], tmp_path: Path
) -> None:
    sim.configure(latency=0.0)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [CHAINFLEET, "run", *files, "-c", "4", "--out", str(tmp_path / "out"), "-q"],
            env=sim_env(sim),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len((tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()) == ITEMS


def read_so_far(pid: int, path: Path) -> int | None:
    """Bytes process ``pid`` has read (``rchar``) while it has ``path`` open, else None."""
    with contextlib.suppress(OSError):
        if any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir()):
            io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
            return int(io["rchar"])
    return None


def test_a_signal_during_the_input_scan_says_no_model_was_called(tmp_path: Path) -> None:
    """Issue 22, D4: SIGTERM while a big input is checked before the first call printed the
    output phase's message ("while writing the output ... chainfleet report") for a folder that
    does not exist. It says what happened instead: nothing was called, exit 130.

    The input is read whole twice before the first call (its fingerprint, then the scan); the
    signal goes once the process has read the file once over and a quarter more."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        'model: sim\nsim: {latency: 0}\ninput: topic\nstages:\n  - {name: a, prompt: "{{ topic }}"}\n'
    )
    big = tmp_path / "big.txt"
    big.write_text("".join(f"topic number {i}\n" for i in range(1_500_000)))
    size = big.stat().st_size
    out = tmp_path / "out"
    child = subprocess.Popen(
        [CHAINFLEET, "run", str(pipeline), "-i", str(big), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first: list[int] = []

        def scanning() -> bool:
            read = read_so_far(child.pid, big)
            if read is not None and not first:
                first.append(read)  # the fingerprint's read begins
            return read is not None and read > first[0] + size * 1.25

        wait_until(scanning, "the input scan")
        assert (read_so_far(child.pid, big) or 0) < first[0] + size * 1.9, "the scan ended before the signal"
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 130, stderr
    assert "SIGTERM received before the first call: stopped; no model was called" in stderr
    assert "writing the output" not in stderr and "chainfleet report" not in stderr
    assert not out.exists()
