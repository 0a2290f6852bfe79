"""``chainfleet plan`` over a route: throughput is the sum of its targets' limits (spill), the
first target's (fallback), or what the weights allow (split), and each target says which of
its limits binds."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import chainfleet.cli.plan  # noqa: F401 - registers the command
from chainfleet.cli import cli

PIPELINE = """\
model: fast
routes:
  fast:
    policy: {policy}
    targets:
      - {{model: openai:gpt-4o-mini, api_key_env: KEY_A, rpm: 600}}
      - {{model: openai:gpt-4o-mini, api_key_env: KEY_B, rpm: 500, tpm: 400000}}
stages:
  - {{name: a, prompt: "{{{{ input }}}}", max_tokens: 500}}
"""


def plan(tmp_path: Path, policy: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(policy=policy), encoding="utf-8")
    result = CliRunner().invoke(cli, ["plan", str(path), "-n", "1000", "-c", "50"])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_a_spill_route_sustains_the_sum_of_its_targets(tmp_path: Path) -> None:
    lines = plan(tmp_path, "spill")
    assert any(line.startswith("limits: 1000 requests/min") for line in lines), lines
    route = next(line for line in lines if line.startswith("route fast (spill)"))
    assert "(KEY_A) 600/min (requests/min bind)" in route
    assert "(KEY_B) 400/min (tokens/min bind)" in route  # 400,000 / (500 + 500) tokens a call
    assert "  1,000 requests/min, the sum of its targets; openai:gpt-4o-mini (KEY_A) fills first" in lines


def test_a_split_route_is_paced_by_the_target_its_weight_fills_first(tmp_path: Path) -> None:
    lines = plan(tmp_path, "split\n    weights: [1, 1]")
    assert "  800 requests/min split by weights, bound by openai:gpt-4o-mini (KEY_B)" in lines


def test_a_fallback_route_runs_at_its_first_targets_limit(tmp_path: Path) -> None:
    lines = plan(tmp_path, "fallback")
    assert any(line.startswith("limits: 600 requests/min") for line in lines), lines
