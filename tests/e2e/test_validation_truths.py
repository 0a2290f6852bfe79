"""Smaller truths (issue 11, item 7) that need a real ``chainfleet`` process:

- the stop message ends with one period;
- a tool module next to the pipeline file imports without PYTHONPATH."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from chainfleet.sim.server import SimServerSettings, SimServerThread

CHAINFLEET = str(Path(sys.executable).parent / "chainfleet")


def test_the_stop_message_ends_with_one_period(tmp_path: Path) -> None:
    sim = SimServerThread(SimServerSettings(api_keys=("sk-right-0123456789",)))
    sim.start()
    try:
        pipeline = tmp_path / "p.yaml"
        pipeline.write_text(
            'name: p\nmodel: openai:gpt-sim\ninput: topic\nstages:\n  - name: a\n    prompt: "{{ topic }}"\n',
            encoding="utf-8",
        )
        topics = tmp_path / "t.txt"
        topics.write_text("tea\ncoffee\n", encoding="utf-8")
        env = {"PATH": os.environ.get("PATH", ""), "OPENAI_BASE_URL": f"{sim.url}/v1"}
        env["OPENAI_API_KEY"] = "sk-wrong-0123456789"
        proc = subprocess.run(
            [CHAINFLEET, "run", str(pipeline), "-i", str(topics), "-o", str(tmp_path / "o"), "-q"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        sim.stop()
    assert proc.returncode == 2
    stop = [line for line in proc.stderr.splitlines() if "the run stopped" in line]
    assert len(stop) == 1, proc.stderr
    assert re.search(r"[^.]\. Completed items are saved in", stop[0]), stop[0]  # the reason's own "." once


def test_a_tool_module_next_to_the_pipeline_imports_without_pythonpath(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "h11b_beside_tools.py").write_text(
        "async def shout(fields):\n    return fields['topic'].upper()\n", encoding="utf-8"
    )
    (folder / "p.yaml").write_text(
        "name: p\nmodel: sim\ninput: topic\nstages:\n  - name: a\n    tool: h11b_beside_tools:shout\n",
        encoding="utf-8",
    )
    (folder / "t.txt").write_text("tea\n", encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "")}  # no PYTHONPATH
    proc = subprocess.run(
        [
            CHAINFLEET,
            "run",
            str(folder / "p.yaml"),
            "-i",
            str(folder / "t.txt"),
            "-o",
            str(tmp_path / "o"),
            "-q",
        ],
        cwd=tmp_path,  # not the pipeline's folder
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"outputs": {"a": "TEA"}' in (tmp_path / "o" / "results.jsonl").read_text(encoding="utf-8")
