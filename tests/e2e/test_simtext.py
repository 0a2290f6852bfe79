"""The simulated model's text is the same in a fresh process, whatever its hash seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainfleet.sim.text import generate

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize("hash_seed", ["1", "987654"])
def test_a_fresh_process_generates_the_same_text(hash_seed: str) -> None:
    code = (
        "import sys\n"
        "from chainfleet.sim.text import generate\n"
        "sys.stdout.buffer.write(generate(sys.argv[1], seed=11, system=sys.argv[2]).encode())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONHASHSEED": hash_seed}
    prompt, system = "Write an article on coral reef restoration", "Be concise."
    done = subprocess.run(
        [sys.executable, "-c", code, prompt, system],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.decode() == generate(prompt, seed=11, system=system)
