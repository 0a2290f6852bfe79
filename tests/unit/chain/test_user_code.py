"""The user's code in a chain (a gate's ``check:`` function, a tool step): what it raises fails
its own item, naming the stage and the exception; the other items and the run go on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import chainfleet
from chainfleet import Pipeline, PipelineError, Stage

TOPICS = ["bees", "ants", "moths"]
FACTS = {"type": "object", "properties": {"facts": {"type": "array", "items": {"type": "string"}}}}


def no_ants(output: Any) -> str | None:
    """A check with a bug: it raises on the outputs that mention ants."""
    if "ants" in str(output).lower():
        raise ValueError("the ant index is not loaded")
    return None


def always_broken(output: Any) -> str | None:
    raise KeyError("config")


async def async_check(output: Any) -> str | None:
    return None


def pipeline(check: str, **stage: Any) -> Pipeline:
    write = {"name": "write", "prompt": "Write on {{ topic }}", "gate": [{"check": check}], **stage}
    return Pipeline.from_dict(
        {"model": "sim", "sim": {"latency": 0, "seed": 0}, "input": "topic", "stages": [write]}
    )


def outcomes(report: Any) -> dict[str, tuple[str, dict[str, Any] | None]]:
    return {r.input["topic"]: (r.status, r.error) for r in report.results()}


def test_a_check_that_raises_for_one_item_fails_only_that_item(tmp_path: Path) -> None:
    report = chainfleet.run(pipeline(f"{__name__}:no_ants"), TOPICS, out=tmp_path / "out")
    assert report.exit_code == 1
    got = outcomes(report)
    assert got["bees"] == ("succeeded", None) and got["moths"] == ("succeeded", None)
    assert got["ants"] == (
        "failed",
        {
            "stage": "write",
            "type": "check_error",
            "message": "gate check 'no_ants': ValueError: the ant index is not loaded",
        },
    )


def test_a_check_that_raises_for_every_item_fails_each_and_the_run_finishes(tmp_path: Path) -> None:
    report = chainfleet.run(pipeline(f"{__name__}:always_broken"), TOPICS, out=tmp_path / "out")
    assert report.exit_code == 1
    for status, error in outcomes(report).values():
        assert status == "failed" and error is not None
        assert (
            error["stage"] == "write" and error["message"] == "gate check 'always_broken': KeyError: 'config'"
        )


def test_a_library_check_that_cannot_read_a_structured_output_fails_the_items(tmp_path: Path) -> None:
    report = chainfleet.run(pipeline("os.path:exists", output=FACTS), TOPICS[:2], out=tmp_path / "out")
    assert report.exit_code == 1
    for status, error in outcomes(report).values():
        assert status == "failed" and error is not None
        assert error["message"].startswith("gate check 'exists': TypeError: ")


def test_an_async_check_is_refused_when_the_pipeline_loads() -> None:
    with pytest.raises(PipelineError, match="not 'async def'"):
        pipeline(f"{__name__}:async_check")


def test_an_async_check_is_refused_naming_the_function() -> None:
    # a coroutine is truthy: run, it would "fail" every try with "<coroutine object ...>"
    class Judge:
        async def __call__(self, output: Any) -> str | None:
            return None

    for check, name in (
        (f"{__name__}:async_check", "async_check"),
        (async_check, "async_check"),
        (Judge(), "Judge"),
    ):
        with pytest.raises(PipelineError) as caught:
            pipeline(check)  # type: ignore[arg-type]
        assert f"'{name}' is 'async def'" in str(caught.value), caught.value
        assert "field 'gate.0.check'" in str(caught.value)


def test_a_tool_step_that_raises_goes_the_same_way(tmp_path: Path) -> None:
    async def search(context: Mapping[str, Any]) -> str:
        if context["topic"] == "ants":
            raise OSError("index offline")
        return f"notes on {context['topic']}"

    stages = [Stage(name="search", tool=search), Stage(name="write", prompt="W {{ search }}")]
    piped = Pipeline(model="sim", sim={"latency": 0, "seed": 0}, input="topic", stages=stages)
    report = chainfleet.run(piped, TOPICS, out=tmp_path / "out")
    got = outcomes(report)
    assert got["bees"][0] == got["moths"][0] == "succeeded"
    assert got["ants"] == (
        "failed",
        {"stage": "search", "type": "tool_error", "message": "OSError: index offline"},
    )
