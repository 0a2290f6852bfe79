"""The Ray backend on a local Ray node (2 CPUs, no dashboard, 127.0.0.1 only) against the
sim model and the sim-server: the same results as a local run, limits held cluster-wide, a
killed worker recovered, and runs resumed across backends.

Ray is slow to start on a small machine, so every test here shares one node (module scope).
Where Ray is not installed these tests skip, except under CI (the env var ``CI`` set), where a
missing Ray fails them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chainfleet.pipeline import Pipeline
from chainfleet.runner import arun
from chainfleet.simserver import SimServerSettings, SimServerThread
from conftest import TOPICS, read_report, read_results

if importlib.util.find_spec("ray") is None:
    if os.environ.get("CI"):
        pytest.fail("CI: Ray is not installed (pip install -e '.[ray]')", pytrace=False)
    pytest.skip("Ray is not installed (pip install 'chainfleet[ray]')", allow_module_level=True)

KEY = "sk-ray-test-0123456789"
CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")
SIM_PIPELINE = """\
name: content
model: openai:gpt-sim
input: topic
stages:
  - name: research
    prompt: "Research {{ topic }}: the key facts."
    max_tokens: 60
  - name: write
    prompt: "Write an article on {{ topic }} from:\\n{{ research }}"
    max_tokens: 80
  - name: edit
    prompt: "Edit this draft:\\n{{ write }}"
    max_tokens: 80
"""


@pytest.fixture(scope="module")
def ray_node() -> Iterator[str]:
    """One Ray node for the module, started the way chainfleet starts one; its GCS address."""
    from chainfleet.backends.ray_cluster import connect

    connection = connect(None, num_cpus=2)
    address = str(connection.ray.get_runtime_context().gcs_address)
    yield address
    connection.ray.shutdown()


@pytest.fixture(scope="module")
def server() -> Iterator[SimServerThread]:
    sim = SimServerThread(SimServerSettings(api_keys=(KEY,), latency=0.0))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def sim(server: SimServerThread, monkeypatch: pytest.MonkeyPatch) -> SimServerThread:
    server.configure(**SimServerSettings(api_keys=(KEY,), latency=0.0).model_dump())
    server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return server


def sim_files(folder: Path, items: int) -> tuple[Path, Path]:
    pipeline = folder / "content.yaml"
    pipeline.write_text(SIM_PIPELINE, encoding="utf-8")
    topics = folder / "topics.txt"
    topics.write_text("".join(f"topic number {i}\n" for i in range(1, items + 1)), encoding="utf-8")
    return pipeline, topics


def comparable(out: Path) -> list[dict[str, Any]]:
    """results.jsonl without the per-item seconds (timing differs between any two runs)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_results(out)]


def cli_env(sim: SimServerThread) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "OPENAI_BASE_URL": f"{sim.url}/v1",
        "OPENAI_API_KEY": KEY,
    }


def test_a_ray_run_writes_the_same_results_as_a_local_run(
    ray_node: str, write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> None:
    pipeline = Pipeline.from_yaml(write_pipeline())
    topics = topics_file(TOPICS * 3)
    local = asyncio.run(arun(pipeline, topics, out=tmp_path / "local", concurrency=4))
    remote = asyncio.run(
        arun(pipeline, topics, out=tmp_path / "ray", concurrency=4, backend="ray", workers=2)
    )
    assert local.items_succeeded == remote.items_succeeded == 15
    assert comparable(tmp_path / "ray") == comparable(tmp_path / "local")
    report = read_report(tmp_path / "ray")
    assert report["calls"]["total"] == 45 and report["calls"]["failed"] == 0
    assert report["tokens"] == read_report(tmp_path / "local")["tokens"]
    assert sorted(report["stages"]) == ["edit", "research", "write"]


def _children(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in family and pid not in family:
                family.add(pid)
                grew = True
    return family


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket the processes ``pids`` listen on."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.append((inodes[inode], _address(address), int(port, 16)))
    return found


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    joined = b"".join(words)
    if joined[:12] == b"\0" * 10 + b"\xff\xff":  # an IPv4-mapped IPv6 address
        return ".".join(str(b) for b in joined[12:])
    return joined.hex()


def test_every_port_the_ray_node_listens_on_is_loopback(ray_node: str) -> None:
    import ray

    @ray.remote(num_cpus=0)
    def touch() -> int:
        return os.getpid()

    ray.get(touch.remote())  # a worker process is up too
    family = _children(os.getpid())
    sockets = _listening(family)
    assert len({pid for pid, _, _ in sockets}) >= 3, sockets  # GCS, raylet, workers at least
    assert ray_node.startswith("127.0.0.1:")
    outside = [s for s in sockets if s[1] != "127.0.0.1"]
    assert not outside, f"Ray listens beyond loopback: {outside}"
