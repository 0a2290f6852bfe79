"""What the Ray driver prepares for a route, without Ray: each target's key variable for the
workers (shown by name only), and one limiter actor per target (model and key) of every route a
stage or a judge names, none for the route's own name."""

from __future__ import annotations

from typing import Any

import pytest

from chainfleet import Pipeline, RunSettings
from chainfleet.backends.ray_driver import RayBackend
from chainfleet.backends.ray_worker import Secrets
from chainfleet.chain.context import RunContext
from chainfleet.store import RunStore

KEY_A, KEY_B = "sk-canary-driver-A-11aa22bb33cc", "sk-canary-driver-B-44dd55ee66ff"


def route_context() -> RunContext:
    pipeline = Pipeline.model_validate(
        {
            "model": "fast",
            "input": "topic",
            "routes": {
                "fast": {
                    "policy": "spill",
                    "targets": [
                        {"model": "openai:gpt-4o-mini", "api_key_env": "KEY_A", "rpm": 120},
                        {"model": "openai:gpt-4o-mini", "api_key_env": "KEY_B"},
                        "sim:echo",
                    ],
                },
                "judges": {"targets": [{"model": "openai:gpt-4o", "api_key_env": "KEY_C"}]},
                "unused": {"targets": [{"model": "openai:gpt-4o", "api_key_env": "KEY_D"}]},
            },
            "stages": [
                {"name": "a", "prompt": "A {{ topic }}"},
                {
                    "name": "b",
                    "model": "sim",
                    "prompt": "B {{ a }}",
                    "gate": [{"judge": {"model": "judges", "rubric": "says B"}}],
                },
            ],
        }
    )
    store = RunStore.open("")
    store.begin_run("r1", pipeline=pipeline.name, settings={})
    return RunContext.local(pipeline, RunSettings(), run_id="r1", store=store)


class _FakeActorClass:
    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []

    def remote(self, **options: Any) -> dict[str, Any]:
        self.made.append(options)
        return options


class _FakeRay:
    def __init__(self) -> None:
        self.actors = _FakeActorClass()

    def remote(self, **_: Any) -> Any:
        return lambda _cls: self.actors


class _FakeConnection:
    def __init__(self) -> None:
        self.ray = _FakeRay()


def test_the_workers_get_every_targets_key_variable_and_no_repr_shows_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEY_A", KEY_A)
    monkeypatch.setenv("KEY_B", KEY_B)
    env = RayBackend()._env(route_context())
    assert env["KEY_A"] == KEY_A and env["KEY_B"] == KEY_B
    shown = repr(Secrets(env))
    assert "KEY_A" in shown and KEY_A not in shown and KEY_B not in shown


def test_one_limiter_actor_per_target_none_for_the_route_name() -> None:
    backend = RayBackend()
    backend.connection = _FakeConnection()  # type: ignore[assignment]
    backend._make_limiters(route_context(), workers=2)
    assert sorted(backend.limiters) == [  # a judge's route too; no actor for a route never named
        "openai:gpt-4o (KEY_C)",
        "openai:gpt-4o-mini (KEY_A)",
        "openai:gpt-4o-mini (KEY_B)",
    ]
    made = {options["rpm"]: options for key, options in backend.limiters.items() if "mini" in key}
    assert made[120]["probe"] and made[None]["probe"]  # a target told nothing starts slow
    assert all(options["workers"] == 2 for options in backend.limiters.values())
