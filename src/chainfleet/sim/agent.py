"""The simulated model playing agent: which tools it calls, with what, and when it answers.

Given a conversation and tool definitions, :func:`next_turn` says which tool calls the simulated
model makes this turn, or ``[]`` when it answers; :func:`answer` is that answer, text that uses
what the tools returned (a failed tool shows in it). Everything is a pure function of the seed
and the conversation, so the same chain makes the same calls, with the same ids and arguments,
at any concurrency and after any resume. The sim-server (all three wire formats) and the
in-process ``sim`` provider both play agent through this module.

The conversation is neutral, whichever wire format it came in: a list of messages
``{"role": "system"|"user"|"assistant"|"tool", "content": str}``, where an assistant message
may carry ``"tool_calls": [{"id", "name", "arguments"}]`` and a tool message carries
``"tool_call_id"`` and ``"is_error"``. A tool is ``{"name", "description", "parameters"}``
(``parameters``: the JSON Schema of its arguments).

How it plays:

- it calls tools for ``tool_turns`` turns, then answers. ``tool_turns`` is the argument, else
  ``[[sim:tool_turns=N]]`` in a system or user message, else 1 to 3 by the seed and the prompt;
  ``0`` answers at once. Turns are counted since the last answer (an assistant message without
  tool calls), so a conversation that goes on after an answer plays again;
- each turn makes one or two calls (two are parallel calls), each to a tool drawn by the seed,
  the prompt and the turn: a deterministic subset of the tools;
- arguments come from the tool's schema (:func:`chainfleet.sim.jsonvalue.generate`), plausible
  for the prompt and different for each call; a plain string argument named like a search
  (``query``, ``q``, ``search``, ``term``, ``keywords``, ``topic``, ``question``) is a short query
  about the prompt's subject ("urban beekeeping key figures"); an id is ``call_`` and 24 hex digits derived
  from the seed, the prompt, the turn and the call's place in it;
- the answer is generated (:func:`chainfleet.sim.text.generate`) from :func:`answer_prompt`: the
  user prompt with every tool result as a bullet, so the answer depends on what the tools
  returned; :func:`answer` also opens the text with a line per result ("search said: ...",
  "fetch failed: ..."), so what a tool did shows in any kind of answer.

Example::

    tools = [{"name": "search", "description": "Search the web",
              "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                             "required": ["query"]}}]
    messages = [{"role": "user", "content": "Research urban beekeeping."}]
    calls = next_turn(messages, tools, seed=0, tool_turns=1)    # [PlannedCall("call_...", "search", {...})]
    messages += [{"role": "assistant", "content": "", "tool_calls": [c.as_message() for c in calls]},
                 *({"role": "tool", "tool_call_id": c.id, "content": "Bees like roofs."} for c in calls)]
    next_turn(messages, tools, seed=0, tool_turns=1)            # []: it answers now
    text = answer(messages, seed=0, max_tokens=400)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chainfleet.sim import jsonvalue as simjson
from chainfleet.sim import text as simtext

__all__ = ["PlannedCall", "answer", "answer_prompt", "next_turn", "tool_turns_in"]

_TURNS = re.compile(r"\[\[sim:tool_turns=(\d+)\]\]")
#: how much of one tool result the answer quotes
_QUOTE_CHARS = 160
_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}
_QUERY_NAMES = frozenset({"query", "q", "search", "search_query", "term", "keywords", "topic", "question"})
_ASPECTS = ("history", "key figures", "recent studies", "costs", "risks", "open questions", "examples")
#: what a string schema may say and still take any short text
_PLAIN_STRING = frozenset({"type", "title", "description", "default", "examples"})
_WORDS = re.compile(r"[A-Za-z][A-Za-z-]*")


@dataclass(frozen=True)
class PlannedCall:
    """One tool call the simulated model makes: a stable ``id``, the tool's ``name``, its
    ``arguments`` (valid against the tool's schema)."""

    id: str
    name: str
    arguments: dict[str, Any]

    def as_message(self) -> dict[str, Any]:
        """The call as a neutral message's ``tool_calls`` entry."""
        return {"id": self.id, "name": self.name, "arguments": dict(self.arguments)}


def next_turn(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]],
    *,
    seed: int,
    tool_turns: int | None = None,
) -> list[PlannedCall]:
    """The tool calls the simulated model makes this turn; ``[]`` when it answers."""
    if not tools:
        return []
    prompt = _user_prompt(messages)
    turns = tool_turns if tool_turns is not None else tool_turns_in(messages)
    if turns is None:
        turns = 1 + _draw(seed, "turns", prompt) % 3
    turn = _turns_taken(messages)
    if turn >= turns:
        return []
    count = 1 + _draw(seed, "count", prompt, turn) % 2
    calls = []
    for place in range(count):
        tool = tools[_draw(seed, "tool", prompt, turn, place) % len(tools)]
        key = f"{seed}\x00{prompt}\x00{turn}\x00{place}".encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(key, digest_size=12)
        arguments = _arguments(tool.get("parameters"), prompt, _draw(seed, "args", prompt, turn, place))
        calls.append(PlannedCall(f"call_{digest.hexdigest()}", str(tool.get("name", "")), arguments))
    return calls


def tool_turns_in(messages: Sequence[Mapping[str, Any]]) -> int | None:
    """The ``N`` of a ``[[sim:tool_turns=N]]`` in a system or user message, or None."""
    for message in messages:
        if message.get("role") in ("system", "user"):
            found = _TURNS.search(_content(message))
            if found:
                return int(found.group(1))
    return None


def answer_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text the final answer is generated from: the user prompt, then one bullet per tool
    result (``- search {"query": ...} returned: ...``; ``- fetch failed: ...``)."""
    results = _results(messages)
    prompt = _user_prompt(messages)
    if not results:
        return prompt
    return prompt + "\n\nTool results:\n" + "\n".join(f"- {line}" for line in results)


def answer(
    messages: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    max_tokens: int = 1024,
    model: str = "sim",
    system: str | None = None,
) -> str:
    """The final answer: the marker line, a line per tool result, then text generated from
    :func:`answer_prompt`, within ``max_tokens`` (by :func:`chainfleet.sim.text.count_tokens`)."""
    prompt = answer_prompt(messages)
    notes = [_clip(line) for line in _results(messages, quote=True)]
    note = " ".join(notes)
    budget = max_tokens - simtext.count_tokens(note) - 2
    if not note or budget < simtext.count_tokens(simtext.marker_line(seed)) + 1:
        return simtext.generate(prompt, system=system, seed=seed, max_tokens=max_tokens, model=model)
    text = simtext.generate(prompt, system=system, seed=seed, max_tokens=budget, model=model)
    marker, _, rest = text.partition("\n")
    return f"{marker}\n{note}\n\n{rest}" if rest.strip() else f"{marker}\n{note}"


# --- reading the conversation -------------------------------------------------------------------


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _user_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n\n".join(_content(m) for m in messages if m.get("role") == "user" and _content(m))


def _turns_taken(messages: Sequence[Mapping[str, Any]]) -> int:
    """Assistant turns with tool calls since the last answer (an assistant turn without)."""
    taken = 0
    for message in messages:
        if message.get("role") == "assistant":
            taken = taken + 1 if message.get("tool_calls") else 0
    return taken


def _results(messages: Sequence[Mapping[str, Any]], *, quote: bool = False) -> list[str]:
    """One line per tool result since the last answer, naming the tool (and, unless ``quote``,
    the arguments it was called with)."""
    calls: dict[str, Mapping[str, Any]] = {}
    lines: list[str] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            if not message.get("tool_calls"):
                calls, lines = {}, []
            for call in message.get("tool_calls") or ():
                calls[str(call.get("id"))] = call
        elif role == "tool":
            call = calls.get(str(message.get("tool_call_id")), {})
            name = str(call.get("name") or "a tool")
            text = " ".join(_content(message).split())
            if message.get("is_error"):
                lines.append(f"{name} failed: {text}")
            elif quote:
                lines.append(f'{name} said: "{text}"')
            else:
                lines.append(f"{name} {_compact(call.get('arguments'))} returned: {text}")
    return lines


def _compact(arguments: Any) -> str:
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False, sort_keys=True)


def _clip(line: str) -> str:
    line = line if len(line) <= _QUOTE_CHARS else line[: _QUOTE_CHARS - 3].rstrip() + '..."'
    return line if line.endswith((".", '"', "!", "?")) else line + "."


# --- drawing ------------------------------------------------------------------------------------


def _draw(seed: int, *parts: object) -> int:
    """A deterministic non-negative integer from the seed and ``parts``."""
    text = "\x1f".join(map(str, (seed, *parts)))
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _arguments(parameters: Any, prompt: str, seed: int) -> dict[str, Any]:
    """Arguments for a tool whose schema is ``parameters`` (none, or no properties: ``{}``)."""
    schema = parameters if isinstance(parameters, Mapping) and parameters else _NO_ARGUMENTS
    if schema.get("type") not in (None, "object") or "properties" not in schema:
        schema = {**schema, "type": "object", "properties": dict(schema.get("properties") or {})}
    value = simjson.generate(schema, prompt=prompt, seed=seed)
    if not isinstance(value, dict):
        return {}
    for name, sub in (schema.get("properties") or {}).items():
        if name.lower() in _QUERY_NAMES and isinstance(sub, Mapping) and sub.get("type") == "string":
            if set(sub) <= _PLAIN_STRING:
                value[name] = _query(prompt, seed)
    return value


def _query(prompt: str, seed: int) -> str:
    """A short search query about the prompt's subject: the words after the verb in its first
    sentence (markers like ``[[sim:...]]`` left out) and an aspect drawn by ``seed``."""
    first = re.sub(r"\[\[.*?\]\]", "", prompt.strip().splitlines()[0] if prompt.strip() else "")
    words = _WORDS.findall(re.split(r"[:.?!]", first)[0])[1:6]
    subject = " ".join(words).lower() or "the topic"
    return f"{subject} {_ASPECTS[_draw(seed, 'aspect') % len(_ASPECTS)]}"
