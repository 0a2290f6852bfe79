"""``chainfleet sim-server`` without a socket: its token buckets on an injected clock, Go's
duration format, settings that never show a key, and the command's refusals and help. (The
server on a port, with the official SDKs: tests/e2e/test_simserver.py.)"""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

import chainfleet.cli.simserver  # noqa: F401 - registers the command
from chainfleet.cli import cli
from chainfleet.sim.bucket import TokenBucket
from chainfleet.sim.limits import go_duration
from chainfleet.sim.settings import SimServerSettings

KEY = "sk-sim-test-key-0123456789"


def test_bucket_window_allows_two_seconds_worth_at_once() -> None:
    now = [0.0]
    bucket = TokenBucket(60, clock=lambda: now[0])
    assert (bucket.limit, bucket.rate, bucket.window_cap) == (60, 1.0, 2)
    assert bucket.wait(1) == 0
    bucket.take(1)
    now[0] = 0.5
    bucket.take(1)
    assert bucket.wait(1) == pytest.approx(0.5)  # short bucket at 0.5, refilling at 1 a second
    now[0] = 2.0
    assert bucket.wait(1) == 0
    assert bucket.wait(2) == 0  # two seconds' worth is back
    bucket.take(2)
    assert bucket.wait(1) == pytest.approx(1.0)
    # a client keeping to the rate is never refused, whatever the jitter of its arrivals
    steady = TokenBucket(600, clock=lambda: now[0])
    for i in range(600):
        now[0] = 10.0 + i * 0.1 + (0.04 if i % 2 else -0.04)
        assert steady.wait(1) == 0
        steady.take(1)
    assert TokenBucket(600, clock=lambda: 0.0).window_cap == 20
    assert TokenBucket(500, clock=lambda: 0.0).window_cap == 17  # ceil(16.67)


def test_bucket_refills_continuously_and_reports_remaining_and_reset() -> None:
    now = [0.0]
    bucket = TokenBucket(600, clock=lambda: now[0])  # 10 a second, window cap 20
    assert bucket.remaining == 600 and bucket.time_to_full() == 0
    grant = bucket.take(500)  # more than the window cap: admitted into an empty window
    assert bucket.remaining == 100
    assert bucket.time_to_full() == pytest.approx(50.0)
    assert bucket.wait(200) == pytest.approx(10.0)  # the minute bucket, not the short one, binds
    now[0] = 4.0
    assert bucket.remaining == 140 and bucket.wait(200) == pytest.approx(6.0)
    now[0] = 10.0
    assert bucket.wait(200) == 0
    bucket.settle(grant, 100)  # the call used 100 of its 500: 400 go back
    assert bucket.remaining == 600  # capped at the capacity
    assert bucket.wait(601) == math.inf


def test_bucket_refund_frees_the_short_window_too() -> None:
    now = [0.0]
    bucket = TokenBucket(600, clock=lambda: now[0])
    grant = bucket.take(20)
    assert bucket.wait(5) == pytest.approx(0.5)
    bucket.settle(grant, 10)
    assert bucket.wait(5) == 0 and bucket.wait(11) == pytest.approx(0.1)


def test_go_duration_prints_like_go() -> None:
    assert [go_duration(s) for s in (0, 0.0004, 0.12, 1, 1.5, 1.2341, 59.9, 360, 3723.5)] == [
        "0s",
        "1ms",
        "120ms",
        "1s",
        "1.5s",
        "1.235s",
        "59.9s",
        "6m0s",
        "1h2m3.5s",
    ]


def test_settings_never_show_a_key_in_their_repr() -> None:
    settings = SimServerSettings(api_keys=(KEY,), rpm=5)
    assert KEY not in repr(settings) and "rpm=5" in repr(settings)
    with pytest.raises(ValueError):
        SimServerSettings(error_rate=0.6, drop_rate=0.6)


def test_the_command_refuses_settings_that_do_not_add_up() -> None:
    result = CliRunner().invoke(cli, ["sim-server", "--error-rate", "0.6", "--drop-rate", "0.6"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "add up to over 1" in result.stderr


def test_the_command_help_has_examples() -> None:
    result = CliRunner().invoke(cli, ["sim-server", "--help"])
    assert result.exit_code == 0
    assert "--rpm 500" in result.output and "OPENAI_BASE_URL" in result.output
