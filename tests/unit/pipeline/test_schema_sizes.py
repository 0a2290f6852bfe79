"""A contract asking for an absurd size (``minItems: 1000000000``) is refused when the pipeline
loads, exit 2 before any call: no model writes that much, so every item would pay for calls
that fail (and the simulated model built a reply of gigabytes, issue 22)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainfleet import Pipeline
from chainfleet.errors import PipelineError

HEAD = "name: t\nmodel: sim\ninput: topic\nstages:\n  - name: a\n    prompt: 'A {{ topic }}'\n    output: "


@pytest.mark.parametrize(
    ("output", "said"),
    [
        ("{type: array, minItems: 1000000000, items: {type: string}}", "minItems: 1,000,000,000 at the root"),
        (
            "{type: object, properties: {facts: {type: string, minLength: 10000000}}}",
            "minLength: 10,000,000 at properties/facts",
        ),
    ],
)
def test_an_absurd_size_is_refused_at_load(tmp_path: Path, output: str, said: str) -> None:
    (tmp_path / "p.yaml").write_text(HEAD + output + "\n", encoding="utf-8")
    with pytest.raises(PipelineError) as caught:
        Pipeline.from_yaml(tmp_path / "p.yaml")
    assert said in str(caught.value) and "no model writes that much" in str(caught.value)
    assert "p.yaml:" in str(caught.value) and "field 'output'" in str(caught.value)


def test_a_large_but_possible_size_loads(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        HEAD + "{type: array, minItems: 500, items: {type: string}}\n", encoding="utf-8"
    )
    assert Pipeline.from_yaml(tmp_path / "p.yaml").stages[0].contract is not None
