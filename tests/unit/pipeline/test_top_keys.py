"""A pipeline file whose top-level key is not a word (``1: x``, a lone ``?`` which YAML reads as
``{None: None}``) was a TypeError traceback from pydantic; found by the deep fuzz profile
(tests/unit/test_fuzz_pipelines.py). It is one error naming the file and line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainfleet import Pipeline
from chainfleet.errors import PipelineError


@pytest.mark.parametrize(("text", "key", "line"), [("?\n", "None", 1), ("name: t\n1: x\n", "1", 2)])
def test_a_top_level_key_that_is_not_a_word_is_one_error(
    tmp_path: Path, text: str, key: str, line: int
) -> None:
    (tmp_path / "p.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(PipelineError) as caught:
        Pipeline.from_yaml(tmp_path / "p.yaml")
    assert str(caught.value) == (
        f"{tmp_path / 'p.yaml'}:{line}: key {key} is not a name: a pipeline's keys are words such as "
        "name, model, input and stages"
    )
