"""Shared fixtures: small pipelines on a fast simulated model, topic files, the CLI runner.

The tests mirror the code: ``tests/unit/<package>/`` runs in-process (no child process, no
server on a socket, no Ray, no browser); ``tests/e2e/`` starts those (or reads an input at full
scale), and every test there is marked ``e2e`` here, so ``python -m pytest -m "not e2e"`` is the
fast loop. This file, with ``sim_cli.py`` and ``review_gates.py`` beside it, is importable from
any sub-folder (``pythonpath = ["tests"]`` in pyproject.toml): ``from conftest import TOPICS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

#: every test under this folder is marked e2e
E2E = Path(__file__).resolve().parent / "e2e"


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests under tests/e2e/ ``e2e``, once for all of them."""
    for item in items:
        if E2E in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)


#: the content chain of examples/content.yaml, on a simulated model that takes no real time
FAST_PIPELINE: dict[str, Any] = {
    "name": "content",
    "model": "sim",
    "sim": {"latency": 0, "seed": 0},
    "input": "topic",
    "stages": [
        {
            "name": "research",
            "system": "You are a meticulous research agent.",
            "prompt": "Research {{ topic }}: the key facts, figures and open questions.",
            "max_tokens": 800,
        },
        {
            "name": "write",
            "system": "You are a clear, engaging writer.",
            "prompt": "Write an article on {{ topic }} from these notes:\n{{ research }}",
            "max_tokens": 1200,
        },
        {
            "name": "edit",
            "system": "You are a careful editor.",
            "prompt": "Edit this draft for clarity and accuracy:\n{{ write }}",
            "max_tokens": 1200,
        },
    ],
}

TOPICS = [
    "The rise of heat pumps in cold climates",
    "How container shipping shaped the global economy",
    "Why sleep matters for memory",
    "The economics of vertical farming",
    "The history of the bicycle",
]


def pipeline_data(**overrides: Any) -> dict[str, Any]:
    """FAST_PIPELINE with top-level keys replaced; ``sim`` is merged rather than replaced."""
    data = json.loads(json.dumps(FAST_PIPELINE))
    sim = overrides.pop("sim", None)
    if sim is not None:
        data["sim"] = {**data["sim"], **sim}
    data.update(overrides)
    return data


@pytest.fixture
def write_pipeline(tmp_path: Path) -> Callable[..., Path]:
    """Write a pipeline YAML file into tmp_path: ``write_pipeline(sim={"fail_on": ["x"]})``."""

    def write(name: str = "pipeline.yaml", **overrides: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(pipeline_data(**overrides), sort_keys=False), encoding="utf-8")
        return path

    return write


@pytest.fixture
def topics_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a plain-text topics file (one topic a line) into tmp_path."""

    def write(topics: list[str] = TOPICS, name: str = "topics.txt") -> Path:
        path = tmp_path / name
        path.write_text("".join(f"{t}\n" for t in topics), encoding="utf-8")
        return path

    return write


def read_results(out: Path) -> list[dict[str, Any]]:
    """results.jsonl as a list of objects, checking each line is one JSON object."""
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def read_report(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


# -- shared by the unit and e2e halves of the batch, CLI and review tests ---------------------------

#: batch mode with short windows and polls, so the sim's batches end in a fraction of a second
FAST_BATCH = {"window": 0.1, "poll": 0.1, "poll_max": 0.3, "sim_delay": 0.2}

#: topics of which one ("poison ivy ...") fails every call when the sim is told ``fail_on: [poison]``
POISONED = [
    "solar power in Kenya",
    "tidal energy",
    "poison ivy and other garden hazards",
    "wind farms at sea",
    "geothermal heat",
]


@pytest.fixture(scope="module")
def ray_node() -> Iterator[str]:
    """One Ray node for the test module that asks for it, started the way chainfleet starts one;
    its GCS address. Closed as the driver closes it: Ray shut down, its reaper ended."""
    from chainfleet.backends.ray_cluster import connect

    connection = connect(None, num_cpus=2)
    yield str(connection.ray.get_runtime_context().gcs_address)
    connection.close()


def numbered_topics(n: int) -> list[str]:
    return [f"topic number {i}" for i in range(1, n + 1)]


@pytest.fixture
def four_waiting(
    write_pipeline: Callable[..., Path], topics_file: Callable[..., Path], tmp_path: Path
) -> Path:
    """A run folder whose four items wait for review at the write stage (exit 3)."""
    from click.testing import CliRunner

    import chainfleet.cli.run  # noqa: F401 - registers the command
    from chainfleet.cli import cli

    data = pipeline_data()
    data["stages"][1]["review"] = "always"
    out = tmp_path / "out"
    pipeline = write_pipeline(stages=data["stages"])
    topics = ["heat pumps", "shipping", "sleep", "bicycles"]
    result = CliRunner().invoke(
        cli, ["run", str(pipeline), "-i", str(topics_file(topics)), "-o", str(out), "-q"]
    )
    assert result.exit_code == 3, result.output
    return out
