"""Streamed answers: the server-sent events of each wire format, cut from the whole answer.

A request with ``stream: true`` gets the same answer as without, as the provider streams it
(``text/event-stream``); each function here takes the answer body a non-streamed request gets
and cuts it into that format's events, so the text, tool calls and usage an SDK assembles from
the stream are the non-streamed answer's by construction:

- OpenAI chat completions (:func:`chat_events`): ``chat.completion.chunk`` objects, a first
  delta with the role, content deltas, ``tool_calls`` deltas (the id and name first, then the
  arguments in pieces), a last chunk with ``finish_reason``; with ``stream_options:
  {include_usage: true}`` every chunk has ``usage: null`` and one more chunk with no choices
  carries the usage; then ``data: [DONE]``;
- OpenAI Responses (:func:`responses_events`): ``response.created``, ``response.in_progress``,
  per output item ``response.output_item.added``, for a message ``response.content_part.added``,
  ``response.output_text.delta`` ... ``.done``, ``response.content_part.done``, for a function
  call ``response.function_call_arguments.delta`` ... ``.done``, then
  ``response.output_item.done``, and ``response.completed`` with the whole response and usage;
- Anthropic messages (:func:`anthropic_events`): ``message_start`` (input tokens),
  ``content_block_start`` / ``content_block_delta`` (``text_delta``, or ``input_json_delta`` for
  a ``tool_use`` block) / ``content_block_stop``, ``message_delta`` (stop reason and output
  tokens), ``message_stop``.

The server pays the latency before the first byte (the answer is generated whole, as the
non-streamed one) and then sends the events at once, so a streamed call takes as long as a
plain one.

Example::

    for event in chat_events(answer_body, include_usage=True):
        response.write(event)           # b'data: {"id": ..., "object": "chat.completion.chunk", ...}\\n\\n'
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

__all__ = ["anthropic_events", "chat_events", "pieces", "responses_events", "sse"]

#: words per text delta, characters per arguments delta
_WORDS = 3
_JSON_CHARS = 16
_WORD_START = re.compile(r"(?<=\s)(?=\S)")


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: ``event: NAME`` (if any) and ``data: JSON``, then a blank line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def pieces(text: str, *, json_text: bool = False) -> list[str]:
    """``text`` in the pieces a stream sends (joined, they are ``text`` again): a few words each,
    or for JSON (arguments) a few characters each.

    >>> pieces("one two three four"), pieces('{"a": 1}', json_text=True)
    (['one two three ', 'four'], ['{"a": 1}'])
    """
    if json_text:
        return [text[i : i + _JSON_CHARS] for i in range(0, len(text), _JSON_CHARS)]
    words = [w for w in _WORD_START.split(text) if w]
    return ["".join(words[i : i + _WORDS]) for i in range(0, len(words), _WORDS)]


def chat_events(body: dict[str, Any], *, include_usage: bool) -> list[bytes]:
    """A ``chat.completion`` body as ``chat.completion.chunk`` events."""
    base = {k: body[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    if include_usage:
        base["usage"] = None
    choice = body["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        )

    calls = message.get("tool_calls") or []
    out = [chunk({"role": "assistant", "content": None if calls else ""})]
    out += [chunk({"content": piece}) for piece in pieces(message.get("content") or "")]
    for index, call in enumerate(calls):
        function = call["function"]
        head = {"index": index, "id": call["id"], "type": "function"}
        out.append(chunk({"tool_calls": [{**head, "function": {"name": function["name"], "arguments": ""}}]}))
        out += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            for piece in pieces(function["arguments"], json_text=True)
        ]
    out.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        out.append(sse({**base, "choices": [], "usage": body["usage"]}))
    out.append(b"data: [DONE]\n\n")
    return out


def responses_events(body: dict[str, Any]) -> list[bytes]:
    """A ``response`` body as the Responses API's typed events."""
    numbers = itertools.count()

    def event(kind: str, **data: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(numbers), **data}, kind)

    started = {**body, "status": "in_progress", "output": [], "usage": None}
    out = [event("response.created", response=started), event("response.in_progress", response=started)]
    for index, item in enumerate(body["output"]):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            text = item["content"][0]["text"]
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append(
                event(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
            )
            out.append(event("response.content_part.added", **at, content_index=0, part=part))
            out += [
                event("response.output_text.delta", **at, content_index=0, delta=piece, logprobs=[])
                for piece in pieces(text)
            ]
            out.append(event("response.output_text.done", **at, content_index=0, text=text, logprobs=[]))
            out.append(
                event("response.content_part.done", **at, content_index=0, part={**part, "text": text})
            )
        else:
            added = {**item, "arguments": "", "status": "in_progress"}
            out.append(event("response.output_item.added", output_index=index, item=added))
            out += [
                event("response.function_call_arguments.delta", **at, delta=piece)
                for piece in pieces(item["arguments"], json_text=True)
            ]
            done = {"arguments": item["arguments"], "name": item["name"]}
            out.append(event("response.function_call_arguments.done", **at, **done))
        out.append(event("response.output_item.done", output_index=index, item=item))
    out.append(event("response.completed", response=body))
    return out


def anthropic_events(body: dict[str, Any]) -> list[bytes]:
    """A ``message`` body as Anthropic's stream events."""

    def event(kind: str, **data: Any) -> bytes:
        return sse({"type": kind, **data}, kind)

    usage = body["usage"]
    started = {
        **body,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    out = [event("message_start", message=started)]
    for index, block in enumerate(body["content"]):
        if block["type"] == "text":
            out.append(event("content_block_start", index=index, content_block={"type": "text", "text": ""}))
            deltas = [{"type": "text_delta", "text": piece} for piece in pieces(block["text"])]
        else:
            out.append(event("content_block_start", index=index, content_block={**block, "input": {}}))
            arguments = json.dumps(block["input"], ensure_ascii=False)
            deltas = [
                {"type": "input_json_delta", "partial_json": p} for p in pieces(arguments, json_text=True)
            ]
        out += [event("content_block_delta", index=index, delta=delta) for delta in deltas]
        out.append(event("content_block_stop", index=index))
    stop = {"stop_reason": body["stop_reason"], "stop_sequence": body["stop_sequence"]}
    out.append(event("message_delta", delta=stop, usage={"output_tokens": usage["output_tokens"]}))
    out.append(event("message_stop"))
    return out
