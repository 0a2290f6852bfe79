"""Run settings as one value (issue 19, item 3): the Python API takes a RunSettings or the same
names as keywords, with the same result; a misspelt setting is refused by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chainfleet import Pipeline, RunSettings, run
from conftest import TOPICS, pipeline_data, read_results


def test_a_settings_object_and_keywords_give_the_same_run(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(pipeline_data())
    given = run(pipeline, TOPICS, RunSettings(concurrency=3, max_attempts=2), out=tmp_path / "a")
    shortcut = run(pipeline, TOPICS, concurrency=3, max_attempts=2, out=tmp_path / "b")
    assert given.concurrency == shortcut.concurrency == 3
    outputs = [r["outputs"] for r in read_results(tmp_path / "a")]
    assert outputs == [r["outputs"] for r in read_results(tmp_path / "b")]
    assert len(outputs) == len(TOPICS)


def test_keywords_override_the_settings_object(tmp_path: Path) -> None:
    pipeline = Pipeline.from_dict(pipeline_data())
    report = run(pipeline, TOPICS[:2], RunSettings(concurrency=4), concurrency=1, out=tmp_path / "o")
    assert report.concurrency == 1


def test_a_misspelt_setting_is_refused_by_name() -> None:
    pipeline = Pipeline.from_dict(pipeline_data())
    with pytest.raises(TypeError, match="unknown run setting: concurency"):
        run(pipeline, TOPICS, concurency=3)


def test_settings_are_frozen_and_replace_makes_a_new_value() -> None:
    settings = RunSettings(rpm=500)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.rpm = 10  # type: ignore[misc]
    changed = settings.replace(rpm=60, tpm=1000)
    assert (settings.rpm, changed.rpm, changed.tpm) == (500, 60, 1000)
