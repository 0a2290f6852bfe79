"""An agent with tools from a real third-party MCP server (mcp-server-time from PyPI) over
stdio: started once per run, listed at load, its calls answered, shut down with the run; a
server that does not start, or a tool name it lacks, is exit 2 before any model call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from click.testing import CliRunner

import chainfleet.cli.run  # noqa: F401 - registers the commands
from chainfleet.cli import cli
from conftest import read_report, read_results

AGENT = """\
name: clock
input: topic
sim: {{latency: 0, tool_turns: 2}}
stages:
  - name: research
    prompt: "Research {{{{ topic }}}}."
    tools:
      - mcp: {{command: [python, -m, mcp_server_time], env: {{TZ: UTC}}}}
        tools: {tools}
"""


def invoke(tmp_path: Path, text: str) -> tuple[int, str, Path]:
    pipeline = tmp_path / "clock.yaml"
    pipeline.write_text(text, encoding="utf-8")
    topics = tmp_path / "topics.txt"
    topics.write_text("tea\nbees\ncoffee\n", encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(pipeline), "-i", str(topics), "-o", str(out), "-q"])
    return result.exit_code, result.stderr, out


def test_an_agent_calls_a_real_mcp_server_over_stdio(tmp_path: Path) -> None:
    code, stderr, out = invoke(tmp_path, AGENT.format(tools="[get_current_time, convert_time]"))
    assert code == 0, stderr
    results = read_results(out)
    assert [r["status"] for r in results] == ["succeeded"] * 3
    steps = [s for r in results for s in r["trajectory"]["research"] if "tool" in s]
    assert len(steps) >= 6 and {s["tool"] for s in steps} <= {"get_current_time", "convert_time"}
    # the sim's arguments are random strings, which the server refuses as time zones: its own
    # error text comes back to the model, as every tool's error does
    assert all(s["is_error"] and "timezone" in s["result"].lower() for s in steps)
    tools = read_report(out)["agents"]["tools"]
    assert sum(t["calls"] for t in tools.values()) == len(steps)


def test_a_tool_the_server_lacks_is_exit_2_with_a_did_you_mean(tmp_path: Path) -> None:
    code, stderr, out = invoke(tmp_path, AGENT.format(tools="[get_current_tme]"))
    assert code == 2
    path = tmp_path / "clock.yaml"
    assert (
        f"error: {path}:9: stage 'research' (stages[0]), field 'tools.0.tools.0': MCP server "
        "'python -m mcp_server_time' has no tool 'get_current_tme' (did you mean 'get_current_time'?); "
        "it has: convert_time, get_current_time"
    ) in stderr
    assert not out.exists()


def test_a_server_that_does_not_start_is_exit_2_with_its_stderrs_last_line(tmp_path: Path) -> None:
    broken = AGENT.format(tools="null").replace("mcp_server_time", "mcp_server_nosuch")
    code, stderr, out = invoke(tmp_path, broken)
    assert code == 2
    assert f"{tmp_path / 'clock.yaml'}:8: stage 'research' (stages[0]), field 'tools.0.mcp'" in stderr
    assert "did not start: " in stderr and "No module named mcp_server_nosuch" in stderr
    assert not out.exists()


def test_the_server_is_started_once_per_run_and_ends_with_it(tmp_path: Path) -> None:
    """A server that counts its starts in a file: one start for a run of many items, and no
    process of it left after the run."""
    server = tmp_path / "countme.py"
    server.write_text(
        "import os, sys\n"
        "from mcp.server.mcpserver import MCPServer\n"
        "with open(os.environ['STARTS'], 'a') as f: f.write(f'{os.getpid()}\\n')\n"
        "app = MCPServer('countme')\n"
        "@app.tool()\n"
        "def shout(text: str) -> str:\n"
        "    '''Shout the text.'''\n"
        "    return text.upper()\n"
        "app.run()\n",
        encoding="utf-8",
    )
    starts = tmp_path / "starts.txt"
    text = AGENT.format(tools="null").replace(
        "command: [python, -m, mcp_server_time], env: {TZ: UTC}",
        f"command: [python, {json.dumps(str(server))}], env: {{STARTS: {json.dumps(str(starts))}}}",
    )
    code, stderr, out = invoke(tmp_path, text)
    assert code == 0, stderr
    pids = starts.read_text(encoding="utf-8").split()
    assert len(pids) == 1  # started once (the listing's session is the run's)
    results = read_results(out)
    steps = [s for r in results for s in r["trajectory"]["research"] if "tool" in s]
    assert steps and all(not s["is_error"] and s["result"].isupper() for s in steps)
    alive = subprocess.run(["ps", "-p", pids[0]], capture_output=True, text=True)
    assert pids[0] not in alive.stdout  # shut down with the run
    assert os.path.exists(sys.executable)


#: where `npm install @modelcontextprotocol/server-everything` was run (.ci/run sets it)
EVERYTHING = os.environ.get("MCP_EVERYTHING_DIR", "")
EVERYTHING_JS = Path(EVERYTHING) / "node_modules/@modelcontextprotocol/server-everything/dist/index.js"


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_agent_calls_a_real_mcp_server_over_streamable_http(tmp_path: Path) -> None:
    """@modelcontextprotocol/server-everything from npm, listening on 127.0.0.1 only."""
    import pytest

    if not EVERYTHING_JS.is_file():
        if os.environ.get("CI"):
            raise AssertionError(f"MCP_EVERYTHING_DIR holds no server-everything: {EVERYTHING_JS}")
        pytest.skip("set MCP_EVERYTHING_DIR to where npm installed @modelcontextprotocol/server-everything")
    port = _free_port()
    loopback = Path(__file__).with_name("loopback.cjs")
    node = subprocess.Popen(
        ["node", "-r", str(loopback), str(EVERYTHING_JS), "streamableHttp"],
        env={**os.environ, "PORT": str(port)}, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    drain = threading.Thread()
    try:
        assert node.stderr is not None
        for line in node.stderr:
            if "listening on port" in line:
                break
        drain = threading.Thread(target=node.stderr.read, daemon=True)  # its log must not fill the pipe
        drain.start()
        text = AGENT.format(tools="[echo, get-sum]").replace(
            "command: [python, -m, mcp_server_time], env: {TZ: UTC}", f"url: 'http://127.0.0.1:{port}/mcp'"
        )
        code, stderr, out = invoke(tmp_path, text)
        assert code == 0, stderr
    finally:
        node.terminate()
        node.wait(timeout=10)
        if node.stderr is not None:
            if drain.ident is not None:  # (started)
                drain.join(timeout=10)
            node.stderr.close()
    steps = [s for r in read_results(out) for s in r["trajectory"]["research"] if "tool" in s]
    echoes = [s for s in steps if s["tool"] == "echo"]
    sums = [s for s in steps if s["tool"] == "get-sum"]
    assert echoes and all(s["result"].startswith("Echo: ") and not s["is_error"] for s in echoes)
    assert sums and all("sum" in s["result"].lower() and not s["is_error"] for s in sums)
