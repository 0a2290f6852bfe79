"""A dead endpoint: a streak of connection failures with no recent success makes it down."""

from __future__ import annotations

from chainfleet.clock import VirtualClock
from chainfleet.errors import ConnectionFailed, EndpointDown, ServerError, Timeout
from chainfleet.limits.health import EndpointHealth

URL = "http://127.0.0.1:9999/v1"


class Stepped(VirtualClock):
    """A virtual clock moved by hand."""

    def advance(self, seconds: float) -> None:
        self._now += seconds


def refused() -> ConnectionFailed:
    return ConnectionFailed("openai: connection failed: Connection refused")


def test_ten_connection_failures_in_a_row_make_the_endpoint_down_naming_it() -> None:
    health = EndpointHealth(VirtualClock())
    assert [health.failed(URL, refused()) for _ in range(9)] == [None] * 9
    down = health.failed(URL, refused())
    assert isinstance(down, EndpointDown) and down.kind == "endpoint_down"
    assert URL in str(down) and "10 connections in a row" in str(down) and "Connection refused" in str(down)


def test_an_answer_ends_the_streak_and_a_timeout_neither_adds_nor_ends() -> None:
    health = EndpointHealth(VirtualClock(), failures=3)
    health.failed(URL, refused())
    health.failed(URL, refused())
    assert health.failed(URL, ServerError("500")) is None  # it answered: the streak is over
    assert health.failed(URL, refused()) is None
    assert health.failed(URL, Timeout("slow")) is None
    assert health.failed(URL, refused()) is None
    assert isinstance(health.failed(URL, refused()), EndpointDown)


def test_a_recent_success_keeps_the_endpoint_up_until_it_is_quiet_for_30_s() -> None:
    clock = Stepped()
    health = EndpointHealth(clock, failures=2)
    health.ok(URL)
    clock.advance(10)
    assert [health.failed(URL, refused()) for _ in range(5)] == [None] * 5  # a restart, perhaps
    clock.advance(25)
    assert isinstance(health.failed(URL, refused()), EndpointDown)


def test_endpoints_are_counted_apart() -> None:
    health = EndpointHealth(VirtualClock(), failures=2)
    health.failed(URL, refused())
    assert health.failed("http://127.0.0.1:8000/v1", refused()) is None
