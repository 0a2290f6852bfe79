"""Structured output on ``chainfleet sim-server``: what a request asks for, and the JSON answer.

The server honours the wire formats' own ways of asking for JSON:

- OpenAI ``response_format``: ``{type: json_schema, json_schema: {name, schema, strict}}``
  answers JSON valid against the schema (with ``strict: true`` the schema must follow strict
  mode's rules, as OpenAI checks them: every object closed and every property required, else a
  400 naming the place); ``{type: json_object}`` answers a JSON object (for the schema put in
  the prompt, if there is one; the messages, the system ones included, must say "JSON", else
  a 400 as OpenAI sends);
- Anthropic ``tools`` with ``tool_choice: {type: tool, name}`` (or ``any``): a ``tool_use``
  block whose ``input`` matches the tool's ``input_schema``, ``stop_reason: tool_use``;
- neither, but a prompt ending in :func:`chainfleet.pipeline.contracts.schema_instructions`: the JSON in
  a fenced block after a line of prose, as a chat model following instructions often answers.

The JSON comes from :func:`chainfleet.sim.jsonvalue.generate`, a function of (seed, prompt, schema).
With ``invalid_output_rate`` a deterministic share of requests (by seed and request text) gets
a reply that breaks the schema instead (:func:`chainfleet.sim.jsonvalue.malformed`; for a tool call,
an input object without a required property), to rehearse repairs over HTTP.

Example::

    ask = openai_ask(body, prompt)        # None: a plain text request
    text = ask.text(prompt, seed=0, invalid=False)
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from chainfleet.pipeline.contracts import schema_in_prompt
from chainfleet.sim import jsonvalue as simjson

__all__ = [
    "AskError",
    "StructuredAsk",
    "anthropic_ask",
    "check_schema",
    "is_invalid",
    "openai_ask",
    "strict_problem",
]

#: the schema of a JSON-mode answer when the prompt gives none
_ANY_OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


class AskError(ValueError):
    """A structured request the real API would refuse with a 400 (the message is its text)."""


@dataclass(frozen=True)
class StructuredAsk:
    """How a request asks for JSON: ``mode`` json_schema, json_object, tool or prompt."""

    mode: str
    schema: dict[str, Any]
    #: the tool's name (Anthropic) or the json_schema's name (OpenAI)
    name: str = ""

    def text(self, prompt: str, *, seed: int, invalid: bool) -> str:
        """The answer as message text (for a tool call: its input as JSON); with ``invalid``,
        one that breaks the schema (a tool's input is always an object: a required field left
        out; otherwise malformed JSON)."""
        if invalid and self.mode != "tool":
            return simjson.malformed(self.schema, prompt=prompt, seed=seed)
        make = simjson.off_schema if invalid else simjson.generate
        body = json.dumps(make(self.schema, prompt=prompt, seed=seed), ensure_ascii=False)
        if self.mode == "prompt":
            return f"Here is the JSON you asked for:\n```json\n{body}\n```"
        return body


def is_invalid(rate: float, seed: int, system: str, prompt: str) -> bool:
    """Whether this request gets a reply that breaks its schema (a share ``rate`` of requests,
    decided by the seed and the request's text, so the same request is always treated alike)."""
    if not rate:
        return False
    digest = hashlib.blake2b(f"{seed}\x00invalid\x00{system}\x00{prompt}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < rate


def openai_ask(body: dict[str, Any], prompt: str, *, system: str = "") -> StructuredAsk | None:
    """What an OpenAI chat request asks for (raises ``AskError`` for one OpenAI refuses);
    ``system``: the system and developer texts, where "json" may be said too."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    if fmt is None or kind == "text":
        return _from_prompt(prompt)
    if kind == "json_object":
        if "json" not in f"{system}\n{prompt}".lower():
            raise AskError(
                "'messages' must contain the word 'json' in some form, to use 'response_format' of "
                "type 'json_object'."
            )
        return StructuredAsk("json_object", schema_in_prompt(prompt) or _ANY_OBJECT)
    if kind != "json_schema" or not isinstance(fmt, dict):
        raise AskError(f"Invalid value for 'response_format.type': {kind!r}.")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise AskError("Missing required parameter: 'response_format.json_schema.name'.")
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise AskError("Missing required parameter: 'response_format.json_schema.schema'.")
    check_schema(schema, f"Invalid schema for response_format '{spec['name']}'")
    if spec.get("strict"):
        problem = strict_problem(schema)
        if problem is not None:
            raise AskError(f"Invalid schema for response_format '{spec['name']}': {problem}")
    return StructuredAsk("json_schema", schema, spec["name"])


def anthropic_ask(body: dict[str, Any], prompt: str) -> StructuredAsk | None:
    """What an Anthropic messages request asks for (``AskError`` for one Anthropic refuses)."""
    tools = body.get("tools")
    if tools is None:
        return _from_prompt(prompt)
    if not isinstance(tools, list) or not tools:
        raise AskError("tools: Input should be a non-empty list")
    by_name: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise AskError(f"tools.{i}.input_schema.type: Input should be 'object'")
        check_schema(schema, f"tools.{i}.custom.input_schema: JSON schema is invalid")
        by_name[str(tool.get("name"))] = schema
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in by_name:
            raise AskError(f"tool_choice: tool {name!r} was not found in tools")
        return StructuredAsk("tool", by_name[name], name)
    if kind == "any":
        name = next(iter(by_name))
        return StructuredAsk("tool", by_name[name], name)
    return _from_prompt(prompt)  # auto or none: this simulated model answers in text


def check_schema(schema: dict[str, Any], refusal: str) -> None:
    """Raise ``AskError`` (``refusal: what``) for a schema its meta-schema refuses, as both
    APIs do: the JSON generator, and strict mode's check, read only well-formed schemas."""
    problem = _schema_problem(json.dumps(schema, sort_keys=True))
    if problem is not None:
        raise AskError(f"{refusal}: {problem}")


@functools.lru_cache(maxsize=256)
def _schema_problem(text: str) -> str | None:
    import jsonschema  # as chainfleet.pipeline.contracts does: only once a schema is checked

    schema = json.loads(text)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "the schema"
        message = exc.message if len(exc.message) <= 200 else exc.message[:197] + "..."
        return f"{where}: {message}"
    return None


def _from_prompt(prompt: str) -> StructuredAsk | None:
    schema = schema_in_prompt(prompt)
    return None if schema is None else StructuredAsk("prompt", schema)


def strict_problem(schema: Any, context: tuple[str, ...] = ()) -> str | None:
    """What OpenAI's strict mode refuses in ``schema`` (in its words), or None."""
    if isinstance(schema, list):
        for i, child in enumerate(schema):
            found = strict_problem(child, (*context, str(i)))
            if found:
                return found
        return None
    if not isinstance(schema, dict):
        return None
    where = f"In context={context!r}, "
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return where + "'additionalProperties' is required to be supplied and to be false."
        props = schema.get("properties") or {}
        missing = [name for name in props if name not in (schema.get("required") or [])]
        if missing:
            return where + (
                "'required' is required to be supplied and to be an array including every key in "
                f"properties. Missing '{missing[0]}'."
            )
    for key in ("properties", "$defs", "definitions"):
        for name, child in (schema.get(key) or {}).items():
            found = strict_problem(child, (*context, key, name))
            if found:
                return found
    for key in ("items", "anyOf"):
        if key in schema:
            found = strict_problem(schema[key], (*context, key))
            if found:
                return found
    return None
