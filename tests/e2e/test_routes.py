"""Routes on two sim-servers standing for two keys (or providers), through the real OpenAI SDK
over HTTP, in-process CLI runs (issue 23, part 1):

- spill: the first server's 120/min is full long before the run is done; calls go to the second
  before the first refuses them (the second server's counts show the spill, the first's 429s
  stay within 1%), and the report says why traffic moved;
- fallback: with the first server stopped, the second takes every call; the first started again
  mid-run is probed and takes the calls back;
- pin and split: weights [3, 1] share the items 3:1, and an item's retries stay on its target;
- an exhausted quota on one target hands the rest of the run to the next;
- resume across targets: a stage refused by its target (unknown model) finishes, on resume, on
  the route's next target; the stage before is not asked again;
- two canary keys appear nowhere: screen, report, store, results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import chainfleet.cli.run  # noqa: F401 - registers the command
from chainfleet.cli import cli
from chainfleet.sim.server import SimServerSettings, SimServerThread
from conftest import read_report

KEY_A = "sk-canary-route-A-7f3e9b21c4d58a60"
KEY_B = "sk-canary-route-B-0a9d8c7e6f5b4a31"


def route_pipeline(a: str, b: str, route: str, *, model_b: str = "gpt-4o-mini") -> str:
    return (
        "model: fast\ninput: topic\nroutes:\n  fast:\n" + route + f"    targets:\n"
        f"      - {{model: openai:gpt-4o-mini, api_key_env: KEY_A, base_url: '{a}/v1'}}\n"
        f"      - {{model: openai:{model_b}, api_key_env: KEY_B, base_url: '{b}/v1'}}\n"
        "stages:\n  - {name: a, prompt: 'A {{ topic }}', max_tokens: 20}\n"
    )


def run(tmp_path: Path, pipeline: str, items: int, *args: str) -> Result:
    (tmp_path / "p.yaml").write_text(pipeline, encoding="utf-8")
    (tmp_path / "t.txt").write_text("".join(f"topic {i}\n" for i in range(items)), encoding="utf-8")
    p, t, out = (str(tmp_path / name) for name in ("p.yaml", "t.txt", "out"))
    return CliRunner().invoke(cli, ["run", p, "-i", t, "--out", out, "-q", *args])


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_A", KEY_A)
    monkeypatch.setenv("KEY_B", KEY_B)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def servers() -> Iterator[tuple[SimServerThread, SimServerThread]]:
    a = SimServerThread(SimServerSettings(api_keys=(KEY_A,), latency=0.02, rpm=120))
    b = SimServerThread(SimServerSettings(api_keys=(KEY_B,), latency=0.02))
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


def test_spill_moves_calls_before_the_first_target_refuses_them(
    tmp_path: Path, keys: None, servers: tuple[SimServerThread, SimServerThread]
) -> None:
    a, b = servers
    done = run(tmp_path, route_pipeline(a.url, b.url, "    policy: spill\n"), 80, "-c", "20")
    assert done.exit_code == 0, done.output
    first, second = a.stats(), b.stats()
    assert second["ok"] >= 40  # the spill: 120/min could not have served 80 calls in the run
    assert first["rate_limited"] <= max(1, first["calls"] // 100)  # <= 1%, before any 429
    route = read_report(tmp_path / "out")["routes"]["fast"]
    by_label = {t["label"]: t for t in route["targets"]}
    assert by_label["openai:gpt-4o-mini (KEY_A)"]["ok"] == first["ok"]
    assert by_label["openai:gpt-4o-mini (KEY_B)"]["ok"] == second["ok"]
    spilled = [m for m in route["moves"] if m["kind"] == "spilled"]
    assert spilled and spilled[0]["to"] == "openai:gpt-4o-mini (KEY_B)"
    text = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert f"spilled {spilled[0]['calls']:,} calls to openai:gpt-4o-mini (KEY_B) while" in text
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "Routes" in page and f"spilled {spilled[0]['calls']:,} calls to openai:gpt-4o-mini" in page


def test_fallback_takes_over_from_a_stopped_server_and_gives_back_when_it_returns(
    tmp_path: Path, keys: None, servers: tuple[SimServerThread, SimServerThread]
) -> None:
    a, b = servers
    port = int(a.url.rsplit(":", 1)[1])
    a.stop()
    policy = "    policy: fallback\n    out_after: 2\n    probe_after: 0.2\n"
    revived: list[SimServerThread] = []

    def revive() -> None:  # once the second server has served some calls, start the first again
        while b.stats()["ok"] < 10:
            time.sleep(0.01)
        again = SimServerThread(SimServerSettings(api_keys=(KEY_A,), latency=0.02))
        again.start(port=port)
        revived.append(again)

    reviver = threading.Thread(target=revive, daemon=True)
    reviver.start()
    try:
        done = run(tmp_path, route_pipeline(a.url, b.url, policy), 150, "-c", "2")
        reviver.join()
        assert done.exit_code == 0, done.output
        assert b.stats()["ok"] >= 10 and revived[0].stats()["ok"] > 0
        moves = read_report(tmp_path / "out")["routes"]["fast"]["moves"]
        kinds = {(m["kind"], m["to"]) for m in moves}
        assert ("fell back", "openai:gpt-4o-mini (KEY_B)") in kinds
        assert ("back", "openai:gpt-4o-mini (KEY_A)") in kinds
        fell = next(m for m in moves if m["kind"] == "fell back")
        assert fell["reason"] == "out of service: connection_failed"
    finally:
        for server in revived:
            server.stop()


def test_split_shares_items_by_weight_and_pin_keeps_retries_on_their_target(
    tmp_path: Path, keys: None, servers: tuple[SimServerThread, SimServerThread]
) -> None:
    a, b = servers
    a.configure(rpm=None, error_rate=0.2)
    policy = "    policy: split\n    weights: [3, 1]\n    out_after: 1000\n"
    done = run(tmp_path, route_pipeline(a.url, b.url, policy), 40, "-c", "4", "--max-attempts", "8")
    assert done.exit_code == 0, done.output
    first, second = a.stats(), b.stats()
    assert first["status"].get("500", 0) > 0  # retries happened...
    assert (first["ok"], second["ok"]) == (30, 10)  # ...each on its item's target: 3:1 exactly
    assert second["calls"] == 10


def test_a_resumed_stage_finishes_on_the_routes_next_target(
    tmp_path: Path, keys: None, servers: tuple[SimServerThread, SimServerThread]
) -> None:
    a, b = servers
    a.configure(rpm=None, models=("gpt-4o-mini",))
    stage_b = "  - {name: b, model: slow, prompt: 'B {{ a }}', max_tokens: 20}\n"
    base = route_pipeline(a.url, b.url, "") + stage_b
    target = "      - {{model: openai:gpt-5, api_key_env: {}, base_url: '{}/v1'}}\n"
    slow_a = "  slow:\n    targets:\n" + target.format("KEY_A", a.url)
    slow_ab = slow_a + target.format("KEY_B", b.url)
    first = _with_route(base, slow_a)
    done = run(tmp_path, first, 10, "-c", "1")
    assert done.exit_code == 2, done.output  # the only target of 'slow' does not know the model
    asked_a = a.stats()["ok"]
    assert asked_a >= 1 and b.stats()["calls"] == 0
    done = run(tmp_path, _with_route(base, slow_ab), 10, "-c", "2", "--resume")
    assert done.exit_code == 0, done.output
    # stage a of the items done before was not asked again; every stage b finished on B
    assert a.stats()["ok"] - asked_a == 10 - asked_a
    assert b.stats()["ok"] == 10
    report = read_report(tmp_path / "out")
    assert report["items"]["succeeded"] == 10
    slow = {t["label"]: t for t in report["routes"]["slow"]["targets"]}
    assert slow["openai:gpt-5 (KEY_B)"]["ok"] == 10


def _with_route(base: str, extra_route: str) -> str:
    return base.replace("routes:\n", "routes:\n" + extra_route, 1)


def test_two_canary_keys_appear_nowhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    keys: None,
    servers: tuple[SimServerThread, SimServerThread],
) -> None:
    a, b = servers
    a.configure(rpm=None)
    monkeypatch.setenv("KEY_A", KEY_A + "-wrong")  # refused by its server: a 401 to report
    done = run(tmp_path, route_pipeline(a.url, b.url, ""), 5, "-c", "1")
    assert done.exit_code == 0, done.output
    assert b.stats()["ok"] == 5
    secrets = [KEY_A, KEY_B, KEY_A[-12:], KEY_B[-12:]]
    for secret in secrets:
        assert secret not in done.output
        for path in (tmp_path / "out").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), (secret, path)
    moves = read_report(tmp_path / "out")["routes"]["fast"]["moves"]
    assert moves[0]["reason"] == "out of service: auth_failed"


def test_an_exhausted_quota_hands_the_rest_to_the_next_target(
    tmp_path: Path, keys: None, servers: tuple[SimServerThread, SimServerThread]
) -> None:
    a, b = servers
    a.configure(rpm=None, quota_tokens=200)
    done = run(tmp_path, route_pipeline(a.url, b.url, ""), 20, "-c", "1")
    assert done.exit_code == 0, done.output  # one target's quota is not the run's end
    served_a, served_b = a.stats()["ok"], b.stats()["ok"]
    assert served_a >= 1 and served_a + served_b == 20
    report = read_report(tmp_path / "out")
    assert report["items"]["succeeded"] == 20
    fell = [m for m in report["routes"]["fast"]["moves"] if m["kind"] == "fell back"]
    assert fell[0]["reason"] == "out of service: quota_exhausted" and fell[0]["calls"] == served_b
