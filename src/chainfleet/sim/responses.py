"""The OpenAI Responses API on the sim server: ``POST /v1/responses``.

What the OpenAI Agents SDK speaks by default, and ``client.responses.create`` in the openai SDK.
It is OpenAI's dialect (:class:`~chainfleet.sim.wire.OpenAI`: the same key, errors in OpenAI's
shape, the same headers, the same 128,000-token context window) with its own body and answer:

- the request: ``model``; ``input``, a string or a list of items (messages with ``input_text``
  parts or a string, earlier ``function_call`` items and their ``function_call_output``
  items, see :mod:`chainfleet.sim.messages`); ``instructions`` (the system text);
  ``max_output_tokens`` (what may be generated, 1024 when absent); ``tools`` of type
  ``function`` and ``tool_choice``; ``text.format`` ``json_schema`` (``name``, ``schema``,
  ``strict``) or ``json_object`` for structured output, checked as chat's ``response_format``
  is (:mod:`chainfleet.sim.structured`; a refusal names ``text.format``); ``stream``.
  ``previous_response_id`` and ``conversation`` are refused (400): the sim keeps no responses,
  so send the whole input; other fields (temperature, store, include ...) are accepted and
  ignored;
- the answer: a ``response`` object whose ``output`` is one ``message`` item with an
  ``output_text`` part, or ``function_call`` items (``call_id``, ``name``, ``arguments`` as a
  JSON string) when the simulated agent calls tools; ``usage`` with ``input_tokens``,
  ``output_tokens``, ``total_tokens`` and their details; with ``stream: true`` the Responses
  events of :func:`chainfleet.sim.stream.responses_events`.

A request here meets the same rules, in the same order, as a chat completion, and is counted
by the same limits and stats.

Example::

    client = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sim")
    reply = client.responses.create(model="gpt-4o-mini", input="Research tea.", max_output_tokens=300)
    reply.output_text, reply.usage.output_tokens
"""

from __future__ import annotations

import json
import time
from typing import Any

from chainfleet.sim import messages, stream
from chainfleet.sim.call import Call, Failure, Reply
from chainfleet.sim.structured import openai_ask
from chainfleet.sim.wire import DEFAULT_MAX_TOKENS, OpenAI, structured_ask, wants_stream

__all__ = ["Responses"]

_STATEFUL = ("previous_response_id", "conversation")


class Responses(OpenAI):
    """``POST /v1/responses``."""

    def parse(self, body: Any) -> Call:
        model = messages.model_of(body)
        for field in _STATEFUL:
            if body.get(field) is not None:
                raise Failure(
                    "bad_request", detail=f"{field}: sim-server keeps no responses; send the whole input"
                )
        system, prompt, talk = messages.responses(body)
        tokens = body.get("max_output_tokens")
        max_tokens = (
            DEFAULT_MAX_TOKENS if tokens is None else messages.max_tokens_of(tokens, "max_output_tokens")
        )
        chat_format = _response_format(body.get("text"))
        try:
            ask = structured_ask(lambda b, p: openai_ask(chat_format, p, system=system), body, prompt)
        except Failure as failure:  # checked as chat's response_format; named as sent
            detail = str(failure.fields.get("detail", ""))
            failure.fields["detail"] = detail.replace("response_format.json_schema", "text.format")
            failure.fields["detail"] = failure.fields["detail"].replace("response_format", "text.format")
            raise
        return Call(model, system, prompt, max_tokens, ask, talk, wants_stream(body))

    def answer(self, call: Call, reply: Reply, number: int) -> dict[str, Any]:
        output: list[dict[str, Any]] = [
            {
                "type": "function_call",
                "id": "fc_" + c.id.removeprefix("call_"),
                "call_id": c.id,
                "name": c.name,
                "arguments": json.dumps(c.arguments, ensure_ascii=False),
                "status": "completed",
            }
            for c in reply.calls
        ]
        if not reply.calls:
            text = {"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}
            item = {"type": "message", "id": f"msg_sim_{number}", "status": "completed", "role": "assistant"}
            output = [{**item, "content": [text]}]
        return {
            "id": f"resp_sim_{number}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "instructions": call.system or None,
            "max_output_tokens": call.max_tokens,
            "model": call.model,
            "output": output,
            "parallel_tool_calls": call.talk.parallel,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "temperature": 1.0,
            "text": {"format": _format(call)},
            "tool_choice": "required" if call.talk.force else "auto",
            "tools": [{"type": "function", "strict": False, **tool} for tool in call.talk.tools],
            "top_p": 1.0,
            "truncation": "disabled",
            "metadata": {},
            "usage": {
                "input_tokens": call.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": reply.tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": call.prompt_tokens + reply.tokens,
            },
        }

    def stream(self, call: Call, body: dict[str, Any]) -> list[bytes]:
        return stream.responses_events(body)


def _response_format(text: Any) -> dict[str, Any]:
    """``text.format`` as chat's ``response_format``, so both are checked by one rule."""
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict):
        return {}
    if fmt.get("type") != "json_schema":
        return {"response_format": {"type": fmt.get("type")}}
    spec = {key: fmt.get(key) for key in ("name", "schema", "strict")}
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


def _format(call: Call) -> dict[str, Any]:
    ask = call.ask
    if ask is None or ask.mode == "prompt":
        return {"type": "text"}
    if ask.mode == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "name": ask.name, "schema": ask.schema, "strict": False}
