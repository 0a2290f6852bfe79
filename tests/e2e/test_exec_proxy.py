"""The command door's parts with real processes and real HTTP: a child's exit, stderr, timeout
and stdin; the local proxy forwarding a real SDK's calls (plain and streamed) to the sim-server
as the item's own, with keys passed through or added, and unknown paths remembered."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from aiohttp import web

from chainfleet.code.command import CommandFailed, run_child
from chainfleet.code.proxy import Proxy, Upstreams, child_env, pass_through
from chainfleet.sim.server import SimServerSettings, SimServerThread

KEY, OTHER = "sk-exec-proxy-test-key-0001", "sk-child-own-key-0002"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(SimServerSettings(api_keys=(KEY, OTHER))) as server:
        yield server


def by_key(sim: SimServerThread) -> dict[str, int]:
    return dict(sim.stats()["completed_by_key"])


# -- children ------------------------------------------------------------------------------------


def child(code: str, *, stdin: bytes | None = None, timeout: float | None = None) -> Any:
    argv = [sys.executable, "-c", code]
    return asyncio.run(run_child(argv, env=os.environ, stdin=stdin, timeout=timeout))


def test_a_child_gives_its_exit_code_stdout_and_whole_stderr() -> None:
    result = child("import sys; print('out'); sys.stderr.write('e' * 100000); sys.exit(4)")

    assert (result.returncode, result.stdout, len(result.stderr)) == (4, b"out\n", 100000)
    assert not result.timed_out


def test_stdin_gives_the_child_the_items_json() -> None:
    result = child("import sys, json; print(json.load(sys.stdin)['topic'])", stdin=b'{"topic": "wind"}')

    assert result.stdout == b"wind\n"


def test_a_timeout_ends_the_childs_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
        "print('started', flush=True); time.sleep(60)\n"
    )

    result = child(code, timeout=1.0)

    assert result.timed_out and result.returncode < 0
    assert result.stdout == b"started\n"
    grandchild = int(marker.read_text())
    for _ in range(100):  # the kill is sent; wait for the kernel to reap it
        if not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild):
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


# -- the proxy -----------------------------------------------------------------------------------


async def through_proxy(url: str, code: str, *, own: dict[str, str]) -> Any:
    """Run ``code`` in a child whose calls go through a pass-through proxy to ``url``; its
    environment has no key or base URL but ``own``."""
    upstreams = Upstreams(openai=f"{url}/v1", anthropic=url, openai_key=KEY, anthropic_key=KEY)
    async with httpx2.AsyncClient() as client, Proxy(pass_through(client), upstreams=upstreams) as proxy:
        with proxy.admit("item-1") as proxied:
            assert proxied["OPENAI_BASE_URL"].startswith("http://127.0.0.1:")
            base = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
            env = child_env({**base, **own}, proxied)
            result = await run_child([sys.executable, "-c", code], env=env, stdin=None, timeout=60)
        return result, proxy.unknown_paths


OPENAI_CHILD = """
import openai
client = openai.OpenAI()
reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "wind"}])
print(reply.choices[0].message.content[:20])
client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "sun"}])
try:
    client.models.list()
except openai.NotFoundError:
    pass
"""


def test_the_openai_sdk_in_a_child_reaches_the_upstream_with_its_own_key(sim: SimServerThread) -> None:
    before = by_key(sim)

    result, unknown = asyncio.run(through_proxy(sim.url, OPENAI_CHILD, own={"OPENAI_API_KEY": OTHER}))

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.startswith(b"<!-- simulated")
    after = by_key(sim)
    assert sum(after.values()) - sum(before.values()) == 2  # models.list is not a completion
    assert unknown == {"/v1/models"}


def test_the_childs_own_key_is_used_not_replaced(sim: SimServerThread) -> None:
    result, _ = asyncio.run(through_proxy(sim.url, OPENAI_CHILD, own={"OPENAI_API_KEY": "sk-not-known"}))

    assert result.returncode == 1
    assert b"AuthenticationError" in result.stderr
    assert b"sk-not-known" not in result.stderr


ANTHROPIC_CHILD = """
import anthropic
client = anthropic.Anthropic()
reply = client.messages.create(model="claude-3-5-haiku-latest", max_tokens=50,
                               messages=[{"role": "user", "content": "wind"}])
print(reply.content[0].text[:20])
"""


def test_a_child_that_sends_no_key_gets_chainfleets(sim: SimServerThread) -> None:
    before = by_key(sim)

    result, unknown = asyncio.run(through_proxy(sim.url, ANTHROPIC_CHILD, own={}))

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.strip()
    assert sum(by_key(sim).values()) == sum(before.values()) + 1  # the sim took chainfleet's key
    assert unknown == set()


STREAMING_CHILD = """
import openai
stream = openai.OpenAI().chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "sun"}], stream=True
)
print("".join(chunk.choices[0].delta.content or "" for chunk in stream))
"""


async def sse_upstream(request: web.Request) -> web.StreamResponse:
    """An upstream that streams five chat chunks as server-sent events."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in ["one ", "two ", "three ", "four ", "five"]:
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
        }
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(0.01)
    await response.write(b"data: [DONE]\n\n")
    return response


def test_a_streamed_answer_passes_through_as_events() -> None:
    async def go() -> Any:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", sse_upstream)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            return await through_proxy(f"http://127.0.0.1:{port}", STREAMING_CHILD, own={})
        finally:
            await runner.cleanup()

    result, _ = asyncio.run(go())

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"one two three four five\n"


def test_a_token_that_belongs_to_no_item_is_a_404(sim: SimServerThread) -> None:
    async def call() -> httpx2.Response:
        async with httpx2.AsyncClient() as client, Proxy(pass_through(client)) as proxy:
            return await client.post(f"http://127.0.0.1:{proxy.port}/nope/v1/chat/completions", json={})

    answer = asyncio.run(call())

    assert answer.status_code == 404
    assert "belongs to no running item" in answer.json()["error"]["message"]


def test_the_upstream_urls_keep_each_sdks_convention() -> None:
    up = Upstreams(openai="http://h/v1", anthropic="http://a")

    assert up.url("/v1/chat/completions", "", anthropic=False) == "http://h/v1/chat/completions"
    assert up.url("/v1/messages", "beta=true", anthropic=True) == "http://a/v1/messages?beta=true"
    assert "sk-" not in repr(Upstreams(openai_key="sk-secret-1234567890"))


def test_a_script_without_its_hash_bang_line_is_a_clear_failure(tmp_path: Path) -> None:
    script = tmp_path / "chain.sh"
    script.write_text("echo hi\n")
    script.chmod(0o755)

    with pytest.raises(CommandFailed) as caught:
        asyncio.run(run_child([str(script)], env=os.environ, stdin=None, timeout=None))

    assert str(caught.value) == (
        "the command could not be started: Exec format error (a script needs a #! line, e.g. #!/bin/sh)"
    )
