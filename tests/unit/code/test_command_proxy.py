"""The command door's proxy, its pure parts: where a child's call goes and with which key, and
the environment a child gets (no server is started here; tests/e2e/test_exec_proxy.py does)."""

from __future__ import annotations

from chainfleet.code.proxy import PLACEHOLDER_KEY, Upstreams, child_env, is_anthropic

UP = Upstreams(openai="http://o/v1", anthropic="http://a", openai_key="sk-o-1", anthropic_key="sk-a-2")


def test_each_sdks_path_reaches_its_upstream() -> None:
    assert UP.url("/v1/chat/completions", "", anthropic=False) == "http://o/v1/chat/completions"
    assert UP.url("/v1/messages", "beta=true", anthropic=True) == "http://a/v1/messages?beta=true"
    assert Upstreams(openai="http://o/").url("/v1/responses", "", anthropic=False) == "http://o/v1/responses"


def test_a_childs_own_key_goes_through_untouched() -> None:
    headers = UP.headers({"Authorization": "Bearer sk-child", "Host": "127.0.0.1"}, anthropic=False)

    assert headers == {"Authorization": "Bearer sk-child"}


def test_no_key_or_the_placeholder_gets_chainfleets() -> None:
    assert UP.headers({}, anthropic=False) == {"Authorization": "Bearer sk-o-1"}
    placeholder = {"Authorization": f"Bearer {PLACEHOLDER_KEY}", "x-chainfleet-stage": "edit"}
    assert UP.headers(placeholder, anthropic=False) == {"Authorization": "Bearer sk-o-1"}
    sent = {"x-api-key": PLACEHOLDER_KEY, "anthropic-version": "2023-06-01"}
    assert UP.headers(sent, anthropic=True) == {"anthropic-version": "2023-06-01", "x-api-key": "sk-a-2"}


def test_without_keys_of_its_own_chainfleet_adds_none() -> None:
    assert Upstreams().headers({}, anthropic=False) == {}


def test_anthropic_calls_are_known_by_their_headers() -> None:
    assert is_anthropic({"anthropic-version": "2023-06-01"})
    assert not is_anthropic({"authorization": "Bearer x"})


def test_a_child_gets_the_proxys_urls_and_a_placeholder_only_for_missing_keys() -> None:
    env = child_env({"OPENAI_API_KEY": "sk-mine", "PATH": "/bin"}, {"OPENAI_BASE_URL": "http://p/t/v1"})

    assert env == {
        "OPENAI_API_KEY": "sk-mine",
        "PATH": "/bin",
        "OPENAI_BASE_URL": "http://p/t/v1",
        "ANTHROPIC_API_KEY": PLACEHOLDER_KEY,
    }


def test_keys_are_not_in_the_repr() -> None:
    assert "sk-o-1" not in repr(UP) and "sk-a-2" not in repr(UP)
