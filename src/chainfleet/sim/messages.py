"""Reading a request's conversation, in each wire format, into the neutral form the sim plays.

Each wire format words a conversation its own way; the sim-server reads all three into one
:class:`~chainfleet.sim.call.Conversation` (what :mod:`chainfleet.sim.agent` reads) plus two
texts: the system text and the prompt text (what the limits count and ``/sim/stats`` keys
answers by):

- OpenAI chat completions (:func:`chat`): ``messages`` with roles system, developer, user,
  assistant (with ``tool_calls``) and tool (``tool_call_id``); ``tools`` of type function;
  ``tool_choice`` none, auto, required or a named function; ``parallel_tool_calls``;
- Anthropic messages (:func:`anthropic`): ``system``, then user and assistant messages whose
  content is a string or blocks (text, ``tool_use`` in assistant turns, ``tool_result`` in user
  turns, with ``is_error``); ``tools`` with ``input_schema``; ``tool_choice`` auto or none (a
  forced one asks for structured output, see :mod:`chainfleet.sim.structured`);
- OpenAI Responses (:func:`responses`): ``instructions`` and ``input``, a string or items
  (messages with ``input_text`` / ``output_text`` parts, ``function_call`` and
  ``function_call_output`` items); ``tools`` of type function (flat: name, parameters).

The prompt text is the user, assistant and tool texts joined by a blank line (a tool call is
written ``name({...arguments})``); the system text the system (and developer, and
instructions) texts likewise. A conversation without tools reads exactly as before tools were
known, so ``completed_by_key`` stays the same for it. OpenAI has no error flag on a tool
result: one whose text starts with "Error" or "An error occurred" (as agent frameworks, the
OpenAI Agents SDK among them, word a failed tool) counts as failed. Anything of the wrong
type is a :class:`~chainfleet.sim.call.Failure` naming its place.

Example::

    system, prompt, talk = chat({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
"""

from __future__ import annotations

import json
from typing import Any

from chainfleet.sim.call import Conversation, Failure
from chainfleet.sim.structured import AskError, check_schema

__all__ = ["anthropic", "chat", "max_tokens_of", "model_of", "responses", "text_of"]

#: a tool result OpenAI sends (it has no error flag) counts as failed when it starts so
_FAILED = ("error", "tool error", "failed", "an error occurred")


def model_of(body: Any) -> str:
    """The ``model`` of a body that must be a JSON object."""
    if not isinstance(body, dict):
        raise Failure("bad_body", detail="the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Failure("bad_body", detail="model: a model name is required")
    return model


def max_tokens_of(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Failure("bad_body", detail=f"{name}: must be an integer of at least 1")
    return value


def text_of(content: Any, where: str, kinds: tuple[str, ...] = ("text",)) -> str:
    """The text of a message's content: a string, or a list of text blocks (of ``kinds``)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for i, block in enumerate(content):
            if not (
                isinstance(block, dict) and block.get("type") in kinds and isinstance(block.get("text"), str)
            ):
                raise Failure(
                    "bad_body", detail=f"{where}.{i}: sim-server accepts {' and '.join(kinds)} blocks only"
                )
            parts.append(block["text"])
        return "".join(parts)
    raise Failure("bad_body", detail=f"{where}: expected a string or a list of text blocks")


class _Reader:
    """Collects the system texts, the prompt texts and the neutral messages, in order."""

    def __init__(self) -> None:
        self.system: list[str] = []
        self.prompt: list[str] = []
        self.messages: list[dict[str, Any]] = []

    def say(self, role: str, text: str) -> None:
        (self.system if role == "system" else self.prompt).append(text)
        self.messages.append({"role": role, "content": text})

    def call(self, text: str, calls: list[dict[str, Any]]) -> None:
        """An assistant turn with tool calls (joined to the assistant turn just before, if any)."""
        shown = [
            f"{c['name']}({json.dumps(c['arguments'], ensure_ascii=False, sort_keys=True)})" for c in calls
        ]
        last = self.messages[-1] if self.messages else {}
        if not text and last.get("role") == "assistant":
            last["tool_calls"] = [*last.get("tool_calls", ()), *calls]
            self.prompt[-1] = "\n".join(filter(None, (self.prompt[-1], *shown)))
            return
        self.prompt.append("\n".join(filter(None, (text, *shown))))
        self.messages.append({"role": "assistant", "content": text, "tool_calls": calls})

    def result(self, call_id: str, text: str, *, error: bool) -> None:
        self.prompt.append(text)
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text, "is_error": error})

    def done(self, **tools: Any) -> tuple[str, str, Conversation]:
        talk = Conversation(tuple(self.messages), **tools)
        return "\n\n".join(self.system), "\n\n".join(self.prompt), talk


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise Failure("bad_body", detail=f"{where}: a non-empty list is required")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise Failure("bad_body", detail=f"{where}: a non-empty string is required")
    return value


def _arguments(value: Any) -> dict[str, Any]:
    """A call's arguments: a JSON object, or its text (what OpenAI sends) read as one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _tool_list(body: dict[str, Any]) -> list[Any]:
    """The body's ``tools``: absent, or a list (of anything; each dialect reads its own)."""
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise Failure("bad_body", detail="tools: expected a list of tools")
    return tools


def _failed(text: str) -> bool:
    return text.strip().lower().startswith(_FAILED)


# --- OpenAI chat completions --------------------------------------------------------------------


def chat(body: dict[str, Any]) -> tuple[str, str, Conversation]:
    """(system, prompt, conversation) of a chat completions body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Failure("bad_body", detail="messages: a non-empty list of messages is required")
    reader = _Reader()
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise Failure("bad_body", detail=f"{where}: a message needs a role and content")
        role, text = message["role"], text_of(message.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            reader.say("system", text)
        elif role == "tool":
            call_id = _string(message.get("tool_call_id"), f"{where}.tool_call_id")
            reader.result(call_id, text, error=_failed(text))
        elif role == "assistant" and message.get("tool_calls"):
            reader.call(
                text,
                [
                    _chat_call(c, f"{where}.tool_calls.{j}")
                    for j, c in enumerate(_list(message["tool_calls"], f"{where}.tool_calls"))
                ],
            )
        else:
            reader.say("assistant" if role == "assistant" else "user", text)
    return reader.done(**_chat_tools(body))


def _chat_call(call: Any, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise Failure("bad_body", detail=f"{where}.function: a tool call needs a function")
    name = _string(function.get("name"), f"{where}.function.name")
    return {
        "id": _string(call.get("id"), f"{where}.id"),
        "name": name,
        "arguments": _arguments(function.get("arguments")),
    }


def _chat_tools(body: dict[str, Any]) -> dict[str, Any]:
    tools = []
    for i, tool in enumerate(_tool_list(body)):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict):
            raise Failure(
                "bad_request",
                detail=f"tools.{i}: sim-server knows function tools only "
                "({type: function, function: {name, parameters}})",
            )
        tools.append(
            _tool(
                function.get("name"),
                function.get("description"),
                function.get("parameters"),
                f"tools.{i}.function",
            )
        )
    choice = body.get("tool_choice")
    named = (
        choice.get("function", {}).get("name")
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict)
        else None
    )
    return _choose(tools, choice, named, body.get("parallel_tool_calls") is not False)


def _tool(name: Any, description: Any, parameters: Any, where: str) -> dict[str, Any]:
    """A tool in the neutral form; its schema checked against its meta-schema, as the APIs do."""
    if parameters is not None and not isinstance(parameters, dict):
        raise Failure("bad_request", detail=f"{where}.parameters: a JSON Schema object is required")
    try:
        check_schema(parameters or {}, f"{where}.parameters: invalid JSON Schema")
    except AskError as exc:
        raise Failure("bad_request", detail=str(exc)) from None
    return {
        "name": _string(name, f"{where}.name"),
        "description": description if isinstance(description, str) else "",
        "parameters": parameters or {},
    }


def _choose(tools: list[dict[str, Any]], choice: Any, named: Any, parallel: bool) -> dict[str, Any]:
    """The tools the model may call, and whether it must, from an OpenAI ``tool_choice``."""
    if not tools or choice == "none":
        return {}
    if isinstance(choice, dict):
        chosen = [t for t in tools if t["name"] == named]
        if not chosen:
            raise Failure("bad_request", detail=f"tool_choice: no function named {named!r} in tools")
        return {"tools": tuple(chosen), "force": True, "parallel": parallel}
    if choice not in (None, "auto", "required"):
        raise Failure(
            "bad_request", detail=f"tool_choice: expected none, auto, required or a function, got {choice!r}"
        )
    return {"tools": tuple(tools), "force": choice == "required", "parallel": parallel}


# --- Anthropic messages -------------------------------------------------------------------------


def anthropic(body: dict[str, Any]) -> tuple[str, str, Conversation]:
    """(system, prompt, conversation) of a messages body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Failure("bad_body", detail="messages: a non-empty list of messages is required")
    reader = _Reader()
    system = text_of(body.get("system"), "system")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise Failure("bad_body", detail=f"{where}: a message needs a role and content")
        role = "assistant" if message["role"] == "assistant" else "user"
        content = message.get("content")
        if not isinstance(content, list):
            reader.say(role, text_of(content, f"{where}.content"))
            continue
        _blocks(reader, role, content, f"{where}.content")
    _, prompt, talk = reader.done(**_anthropic_tools(body))
    return system, prompt, talk


def _blocks(reader: _Reader, role: str, blocks: list[Any], where: str) -> None:
    """One message's blocks: text, tool_use (assistant) and tool_result (user) in order."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        at = f"{where}.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_use" and role == "assistant":
            arguments = block.get("input")
            calls.append(
                {
                    "id": _string(block.get("id"), f"{at}.id"),
                    "name": _string(block.get("name"), f"{at}.name"),
                    "arguments": arguments if isinstance(arguments, dict) else {},
                }
            )
        elif kind == "tool_result" and role == "user":
            text = text_of(block.get("content"), f"{at}.content")
            reader.result(
                _string(block.get("tool_use_id"), f"{at}.tool_use_id"),
                text,
                error=block.get("is_error") is True,
            )
        elif kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        else:
            raise Failure(
                "bad_body",
                detail=f"{at}: sim-server accepts text, tool_use (assistant) and tool_result (user) "
                "blocks only",
            )
    if calls:
        reader.call("".join(texts), calls)
    elif texts or not blocks:
        reader.say(role, "".join(texts))


def _anthropic_tools(body: dict[str, Any]) -> dict[str, Any]:
    choice = body.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else None
    listed = body.get("tools")
    if kind != "auto" or not isinstance(listed, list) or not all(isinstance(t, dict) for t in listed):
        # none; any or tool ask for structured output; a malformed list is refused there
        # (chainfleet.sim.structured), in Anthropic's words
        return {}
    tools = [
        _tool(t.get("name"), t.get("description"), t.get("input_schema"), f"tools.{i}")
        for i, t in enumerate(listed)
    ]
    return {"tools": tuple(tools), "parallel": choice.get("disable_parallel_tool_use") is not True}


# --- OpenAI Responses ---------------------------------------------------------------------------


def responses(body: dict[str, Any]) -> tuple[str, str, Conversation]:
    """(system, prompt, conversation) of a Responses body: ``instructions`` and ``input``."""
    reader = _Reader()
    instructions = body.get("instructions")
    if instructions is not None:
        reader.say("system", text_of(instructions, "instructions"))
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for i, item in enumerate(_list(items, "input")):
        _item(reader, item, f"input.{i}")
    if not any(m["role"] != "system" for m in reader.messages):
        raise Failure("bad_body", detail="input: at least one message is required")
    return reader.done(**_responses_tools(body))


_PARTS = ("input_text", "output_text", "text")


def _item(reader: _Reader, item: Any, where: str) -> None:
    kind = item.get("type", "message") if isinstance(item, dict) else None
    if kind == "message" and isinstance(item.get("role"), str):
        role = item["role"]
        text = text_of(item.get("content"), f"{where}.content", _PARTS)
        reader.say(
            "system" if role in ("system", "developer") else ("assistant" if role == "assistant" else "user"),
            text,
        )
    elif kind == "function_call":
        call = {
            "id": _string(item.get("call_id"), f"{where}.call_id"),
            "name": _string(item.get("name"), f"{where}.name"),
            "arguments": _arguments(item.get("arguments")),
        }
        reader.call("", [call])
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else text_of(output, f"{where}.output", _PARTS)
        reader.result(_string(item.get("call_id"), f"{where}.call_id"), text, error=_failed(text))
    elif kind != "reasoning":  # a reasoning item carries nothing the sim reads
        raise Failure(
            "bad_body",
            detail=f"{where}: sim-server reads messages, function_call and function_call_output items only",
        )


def _responses_tools(body: dict[str, Any]) -> dict[str, Any]:
    tools = []
    for i, tool in enumerate(_tool_list(body)):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise Failure(
                "bad_request",
                detail=f"tools.{i}: sim-server knows function tools only "
                "({type: function, name, parameters})",
            )
        tools.append(_tool(tool.get("name"), tool.get("description"), tool.get("parameters"), f"tools.{i}"))
    choice = body.get("tool_choice")
    named = choice.get("name") if isinstance(choice, dict) else None
    return _choose(tools, choice, named, body.get("parallel_tool_calls") is not False)
