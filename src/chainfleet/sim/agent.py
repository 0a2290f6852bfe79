"""The simulated model playing agent, deterministically (provisional: branch ``simwire`` owns it).

Given tools, the simulated model calls a deterministic subset of them, with arguments generated
from their JSON Schemas (:mod:`chainfleet.sim.jsonvalue`), over ``tool_turns`` turns (the prompt's
``[[sim:tool_turns=N]]``, else one to three by seed and prompt), then answers. The answer is made
from :func:`answer_prompt`: the user prompt plus every tool result, so an output depends on what
the tools returned and a failing tool shows. Everything is a function of (seed, messages, tools).

Messages are neutral (see :mod:`chainfleet.providers.base`)::

    calls = next_turn([{"role": "user", "content": "Research bees"}], tools, seed=0)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chainfleet.sim import jsonvalue

__all__ = ["PlannedCall", "answer_prompt", "next_turn"]

_TURNS = re.compile(r"\[\[sim:tool_turns=(\d+)\]\]")


@dataclass(frozen=True)
class PlannedCall:
    """One tool call the simulated model makes: a stable id, the tool, its arguments."""

    id: str
    name: str
    arguments: dict[str, Any]


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()


def _user_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    return next((str(m.get("content") or "") for m in messages if m.get("role") == "user"), "")


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
    done = sum(1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls"))
    if tool_turns is None:
        marked = _TURNS.search(prompt)
        tool_turns = int(marked.group(1)) if marked else 1 + _digest(seed, "turns", prompt)[0] % 3
    if done >= tool_turns:
        return []
    pick = _digest(seed, "pick", prompt, done)
    count = 1 + pick[0] % min(2, len(tools))
    start = pick[1] % len(tools)
    chosen = [tools[(start + i) % len(tools)] for i in range(count)]
    calls = []
    for position, tool in enumerate(chosen):
        schema = tool.get("parameters") or {"type": "object", "properties": {}}
        arguments = jsonvalue.generate(schema, prompt=f"{prompt}\n{done}:{position}", seed=seed)
        call_id = "call_" + _digest(seed, prompt, done, position).hex()
        arguments = arguments if isinstance(arguments, dict) else {}
        calls.append(PlannedCall(call_id, str(tool["name"]), arguments))
    return calls


def answer_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text the final answer is generated from: the user prompt and every tool result."""
    parts = [_user_prompt(messages)]
    for message in messages:
        if message.get("role") == "tool":
            label = "Tool error" if message.get("is_error") else "Tool result"
            parts.append(f"{label}: {message.get('content', '')}")
    return "\n".join(parts)
