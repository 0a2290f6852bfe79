"""The tools an agent stage may call: Python functions and MCP servers, checked as they load.

A stage with ``tools:`` is an agent: the model is shown the tools' definitions (a name, a
description and a JSON Schema of the arguments) and may ask for calls to them, turn after turn,
until it answers. Each entry of ``tools:`` is a :class:`ToolSettings`::

    tools:
      - function: mytools:search          # a sync or async Python function
        concurrency: 4                    # at most 4 calls of it at once in the whole run
        rpm: 120                          # and at most 120 a minute
        timeout: 10                       # seconds; a call over it is an error result
        retries: 2                        # again after a transient error (chainfleet's RetryableError)
      - mcp: {command: [python, -m, mcp_server_time]}   # every tool of an MCP server
        tools: [get_current_time]         # or only these

A function's schema is made by pydantic from its signature (:func:`function_tool`): each
parameter becomes a property of its type hint (``Annotated[str, Field(description=...)]``
describes it, a pydantic model parameter nests its own schema), and the function's docstring is
the tool's description. Nothing is parsed by hand. A parameter named ``idempotency_key`` is not
shown to the model: chainfleet fills it with ``RUN-ITEM-STAGE-TURN-CALL`` so a tool with side
effects can recognise a call made again after a kill (see the README).

An MCP server's tools are listed when the run starts (``chainfleet.chain.mcp``): this module
only checks how the server is named.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError

from chainfleet.pipeline.gates import SpecError
from chainfleet.pipeline.imports import import_object

__all__ = ["IDEMPOTENCY_KEY", "FunctionTool", "McpServer", "ToolSettings", "function_tool"]

#: the parameter name a tool function declares to receive its call's idempotency key
IDEMPOTENCY_KEY = "idempotency_key"
#: a tool name both wire formats accept
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class FunctionTool:
    """A Python function as a tool: its name, description, argument schema, and how to call it.

    ``arguments`` (a pydantic model made from the signature) validates what the model asked for;
    :meth:`bind` turns valid arguments into keyword arguments for the function.
    """

    name: str
    description: str
    parameters: Mapping[str, Any]
    function: Callable[..., Any]
    arguments: type[BaseModel]
    wants_key: bool = False

    def definition(self) -> dict[str, Any]:
        """The neutral tool definition a provider sends: ``{name, description, parameters}``."""
        return {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}

    def bind(self, arguments: Mapping[str, Any], key: str) -> dict[str, Any]:
        """Keyword arguments for the function; ``pydantic.ValidationError`` when ``arguments``
        break the schema (the model is told why and may try again)."""
        checked = self.arguments.model_validate(dict(arguments))
        kwargs = {name: getattr(checked, name) for name in type(checked).model_fields}
        if self.wants_key:
            kwargs[IDEMPOTENCY_KEY] = key
        return kwargs


def function_tool(function: Callable[..., Any], name: str | None = None) -> FunctionTool:
    """The tool a function makes. ``ValueError`` naming the parameter that cannot become a
    JSON Schema (no type hint, ``*args``, a type pydantic cannot describe)."""
    if not callable(function):
        raise ValueError(f"is not a function: {type(function).__name__}")
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:  # a hint naming something undefined: the user's module to fix
        raise ValueError(f"its type hints cannot be read: {type(exc).__name__}: {exc}") from exc
    fields: dict[str, Any] = {}
    wants_key = False
    for parameter in signature.parameters.values():
        if parameter.name == IDEMPOTENCY_KEY:
            wants_key = True
            continue
        fields[parameter.name] = (_parameter_type(parameter, hints), _default(parameter))
    tool_name = str(name or getattr(function, "__name__", ""))
    if not _TOOL_NAME.match(tool_name):
        raise ValueError(f"tool name {tool_name!r} must be letters, digits, _ or -, at most 64 long")
    model = pydantic.create_model(f"{tool_name}_arguments", **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    description = inspect.getdoc(function) or f"The {tool_name} tool."
    return FunctionTool(tool_name, description, schema, function, model, wants_key)


def _parameter_type(parameter: inspect.Parameter, hints: Mapping[str, Any]) -> Any:
    what = f"parameter {parameter.name!r}"
    if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
        raise ValueError(f"{what}: *args and **kwargs cannot become a JSON Schema")
    if parameter.kind is parameter.POSITIONAL_ONLY:
        raise ValueError(f"{what} is positional-only: a tool is called with named arguments")
    if parameter.name not in hints:
        raise ValueError(f"{what} has no type hint, so it cannot become a JSON Schema")
    hint = hints[parameter.name]
    try:
        pydantic.TypeAdapter(hint).json_schema()
    except (PydanticSchemaGenerationError, PydanticInvalidForJsonSchema) as exc:
        shown = getattr(hint, "__name__", repr(hint))
        raise ValueError(f"{what}: its type {shown} cannot become a JSON Schema") from exc
    return hint


def _default(parameter: inspect.Parameter) -> Any:
    return ... if parameter.default is parameter.empty else parameter.default


class McpServer(BaseModel):
    """An MCP server: a command started over stdio (with ``env``), or a streamable HTTP ``url``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] | None = Field(None, min_length=1)
    env: dict[str, str] = {}
    url: str | None = None

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server has exactly one of 'command' (stdio) or 'url' (streamable HTTP)")
        return self

    @property
    def label(self) -> str:
        """How messages name the server: its command line or its URL."""
        return " ".join(self.command) if self.command else str(self.url)


class ToolSettings(BaseModel):
    """One entry of a stage's ``tools:``: a ``function`` or an ``mcp`` server, and its limits.

    ``concurrency`` caps this tool's calls in flight across the run and ``rpm`` its calls a
    minute (the time a call waits for either is the tool's own wait, in the report);
    ``timeout`` (seconds) turns a slow call into an error result; ``retries`` tries a call again
    after an error the tool marks as transient (it raises a ``chainfleet.errors.RetryableError``)
    or a timeout.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    function: Any = None
    name: str | None = None
    mcp: McpServer | None = None
    #: with ``mcp:``: the server's tools to offer (None: all of them)
    tools: list[str] | None = None
    concurrency: int | None = Field(None, ge=1)
    #: calls of this tool a minute across the run (None: no limit)
    rpm: float | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0)
    retries: int = Field(0, ge=0)

    _tool: FunctionTool | None = PrivateAttr(None)

    @field_validator("function")
    @classmethod
    def _import(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = import_object(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> ToolSettings:
        if (self.function is None) == (self.mcp is None):
            raise ValueError("a tool is exactly one of 'function: module:name' or 'mcp: {command|url}'")
        if self.function is not None:
            if self.tools is not None:
                raise SpecError("'tools' selects an MCP server's tools; a function is one tool", ("tools",))
            try:
                self._tool = function_tool(self.function, self.name)
            except ValueError as exc:
                raise SpecError(str(exc), ("function",)) from exc
        elif self.name is not None:
            raise SpecError("'name' renames a function; an MCP server's tools keep their names", ("name",))
        return self

    @property
    def function_tool(self) -> FunctionTool | None:
        """The tool a ``function:`` entry makes (None for an MCP server)."""
        return self._tool
