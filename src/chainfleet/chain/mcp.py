"""MCP servers as agent tools, through the official ``mcp`` SDK: started once per run.

An agent stage's ``tools:`` may name an MCP server: a command spoken to over stdio, or a
streamable HTTP URL. :func:`start_servers` starts every server the pipeline names (one session
per distinct server, shared by every stage and item), lists its tools, and checks what the
pipeline asks of it, so each problem is exit 2 before any model call, naming the file, line,
stage and field:

- a server that does not start: its stderr's last line (stdio) or the connection error;
- a tool name the server lacks (``tools: [...]`` under ``mcp:``), with a did-you-mean;
- the ``mcp`` package missing (the ``mcp`` extra).

The sessions live in the :class:`McpServers` returned, closed with the run (``aclose``, in the
task that started them: the SDK's task groups want that). A call is ``session.call_tool``; an
error the server reports (``is_error``) and a failure of the connection both go back to the
model as an error result, as any tool's do.

Example::

    servers = await start_servers(pipeline)    # ConfigError if one cannot start
    try:
        ctx.agent_tools = servers.by_stage       # {stage name: [McpTool, ...]}
        ...
    finally:
        await servers.aclose()
"""

from __future__ import annotations

import contextlib
import difflib
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chainfleet.errors import ConfigError
from chainfleet.pipeline import Pipeline
from chainfleet.pipeline.tools import McpServer, ToolSettings
from chainfleet.redact import clip

if TYPE_CHECKING:
    from mcp import ClientSession

__all__ = ["McpServers", "McpTool", "start_servers"]

#: seconds a server has to start and answer ``initialize`` and ``tools/list``
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class McpTool:
    """One tool of an MCP server, as an agent's :class:`~chainfleet.chain.agent.Tool`."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    session: ClientSession
    settings: ToolSettings

    def definition(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}

    async def invoke(self, arguments: Mapping[str, Any], key: str) -> tuple[str, bool]:
        """Call the tool; its text content (or structured content as JSON), and whether the
        server marked it an error. A broken connection is an error result too."""
        try:
            result = await self.session.call_tool(self.name, dict(arguments))
        except Exception as exc:  # the server went away or refused the request: tell the model
            return f"error: MCP call failed: {type(exc).__name__}: {clip(exc, 500)}", True
        content = getattr(result, "content", None) or ()
        texts = [str(c.text) for c in content if hasattr(c, "text")]
        structured = getattr(result, "structured_content", None)
        text = "\n".join(texts) if texts else json.dumps(structured, ensure_ascii=False, default=str)
        return text, bool(getattr(result, "is_error", False))


@dataclass
class McpServers:
    """The run's MCP sessions and the tools each agent stage gets from them."""

    stack: contextlib.AsyncExitStack[Any]
    by_stage: dict[str, list[Any]] = field(default_factory=dict)

    async def aclose(self) -> None:
        """Shut every server down (stdio servers' processes end with their session)."""
        with contextlib.suppress(Exception):  # a server already gone has nothing left to close
            await self.stack.aclose()


async def start_servers(pipeline: Pipeline) -> McpServers:
    """Start and list every MCP server the pipeline names; ``ConfigError`` (all problems found)
    when one does not start or lacks a tool a stage names."""
    servers = McpServers(contextlib.AsyncExitStack())
    if any(t.mcp is not None for s in pipeline.stages for t in s.tools or ()):
        try:
            import mcp  # noqa: F401 - only to know it is there
        except ImportError:
            raise ConfigError("MCP tools need the mcp package: pip install 'chainfleet[mcp]'") from None
    sessions: dict[str, tuple[ClientSession, list[Any]] | None] = {}  # by the server's settings
    problems: list[ConfigError] = []
    try:
        for index, stage in enumerate(pipeline.stages):
            for number, settings in enumerate(stage.tools or ()):
                if settings.mcp is None:
                    continue
                at: tuple[Any, ...] = ("stages", index, "tools", number)
                same = json.dumps(settings.mcp.model_dump(), sort_keys=True)
                if same not in sessions:
                    sessions[same] = await _open(servers, settings.mcp, pipeline, at, problems)
                opened = sessions[same]
                if opened is not None:
                    tools = _select(opened, settings, pipeline, at, problems)
                    servers.by_stage.setdefault(stage.name, []).extend(tools)
    except BaseException:
        await servers.aclose()
        raise
    if problems:
        await servers.aclose()
        raise ConfigError.gather(problems)
    return servers


async def _open(
    servers: McpServers,
    server: McpServer,
    pipeline: Pipeline,
    at: tuple[Any, ...],
    problems: list[ConfigError],
) -> tuple[ClientSession, list[Any]] | None:
    """A started, initialized session and its tools; None (and a problem) when it fails."""
    import anyio

    errlog = servers.stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8"))
    inner = contextlib.AsyncExitStack()
    try:
        session = await _connect(inner, server, errlog)  # (the SDK's task groups: outside the timeout)
        with anyio.fail_after(START_TIMEOUT):
            await session.initialize()
            listed = (await session.list_tools()).tools
    except Exception as exc:
        with contextlib.suppress(Exception):
            await inner.aclose()
        why = _last_line(errlog) or f"{type(exc).__name__}: {exc}"
        reason = f"MCP server {server.label!r} did not start: {clip(why, 300)}"
        problems.append(pipeline.problem(reason, (*at, "mcp")))
        return None
    servers.stack.push_async_callback(inner.aclose)
    return session, list(listed)


async def _connect(stack: contextlib.AsyncExitStack[Any], server: McpServer, errlog: Any) -> ClientSession:
    from mcp import ClientSession

    if server.command is not None:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        command = sys.executable if server.command[0] in ("python", "python3") else server.command[0]
        env = {**_inherited_env(), **server.env}
        params = StdioServerParameters(command=command, args=server.command[1:], env=env)
        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
    else:
        from mcp.client.streamable_http import streamable_http_client

        streams = await stack.enter_async_context(streamable_http_client(str(server.url)))
        read, write = streams[0], streams[1]  # (some SDK versions add a session-id getter)
    return await stack.enter_async_context(ClientSession(read, write))


def _inherited_env() -> dict[str, str]:
    """The environment a stdio server starts with: the SDK's safe default set (PATH, HOME...)."""
    from mcp.client.stdio import get_default_environment

    return dict(get_default_environment())


def _last_line(errlog: Any) -> str:
    errlog.flush()
    errlog.seek(0)
    lines = [line.strip() for line in errlog.read().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _select(
    opened: tuple[ClientSession, list[Any]],
    settings: ToolSettings,
    pipeline: Pipeline,
    at: tuple[Any, ...],
    problems: list[ConfigError],
) -> list[McpTool]:
    """The server's tools a stage asked for (all by default); a name it lacks is a problem."""
    session, listed = opened
    by_name = {tool.name: tool for tool in listed}
    wanted = settings.tools if settings.tools is not None else list(by_name)
    chosen = []
    for number, name in enumerate(wanted):
        tool = by_name.get(name)
        if tool is None:
            hint = difflib.get_close_matches(name, list(by_name), n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            assert settings.mcp is not None
            reason = (
                f"MCP server {settings.mcp.label!r} has no tool {clip(repr(name), 80)}{did}; "
                f"it has: {', '.join(sorted(by_name)) or 'none'}"
            )
            problems.append(pipeline.problem(reason, (*at, "tools", number)))
            continue
        schema = dict(tool.input_schema or {"type": "object", "properties": {}})
        description = tool.description or f"The {tool.name} tool."
        chosen.append(McpTool(tool.name, description, schema, session, settings))
    return chosen
