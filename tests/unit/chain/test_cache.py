"""The response cache never answers the sim model: a second run over the same cache calls it
again. (A shared cache with a real provider: tests/e2e/test_resume.py.)"""

from __future__ import annotations

from pathlib import Path


def test_the_sim_model_is_never_answered_from_a_cache(tmp_path: Path) -> None:
    from chainfleet import Pipeline, run

    pipeline = Pipeline.from_dict(
        {
            "sim": {"latency": 0},
            "input": "topic",
            "stages": [{"name": "a", "prompt": "Research {{ topic }}."}],
        }
    )
    cache = tmp_path / "cache"
    first = run(pipeline, ["tea", "coffee"], out=tmp_path / "a", cache=cache)
    second = run(pipeline, ["tea", "coffee"], out=tmp_path / "b", cache=cache)
    assert first.calls["total"] == second.calls["total"] == 2
    assert second.cache_hits == 0
