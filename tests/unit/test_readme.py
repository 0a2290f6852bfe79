"""The README's two set-up commands are the ones CI runs and the console script provides."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(python3 -m venv .*)\n```", text)


def test_readme_opens_with_a_demo_command_and_a_test_command() -> None:
    demo, tests = readme_commands()[:2]
    assert demo.endswith("chainfleet demo")
    assert "pip install" in demo and "python3 -m venv" in demo
    assert "pytest" in tests and "pip install -e '.[dev]'" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    tests = readme_commands()[1]
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci_lines
