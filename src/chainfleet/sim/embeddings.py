"""OpenAI embeddings on the sim server: ``POST /v1/embeddings``.

What a chain that retrieves before it writes calls, and what the proxy of ``chainfleet exec``
forwards; the sim answers it so such chains run offline. OpenAI's dialect (key, errors,
headers) with its own body and answer:

- the request: ``model``; ``input``, a string, a list of strings, or token arrays (a list of
  integers, or a list of them: read as their numbers written out); ``dimensions`` (1536 when
  absent); ``encoding_format`` ``float`` or ``base64`` (little-endian float32, what the openai
  SDK asks for and decodes);
- the answer: one unit vector per input, a function of its text alone (the hashing trick over
  its lowercased words, so texts sharing words point alike and the same text always gives the
  same vector), and ``usage`` with ``prompt_tokens`` (P) and ``total_tokens``.

It meets the same rules in the same order as a chat completion (a request charges P tokens and
generates none) and is counted in the same stats.

Example::

    client.embeddings.create(model="text-embedding-3-small", input=["tea", "green tea"])
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from chainfleet.sim import messages
from chainfleet.sim import text as simtext
from chainfleet.sim.call import Call, Failure, Reply
from chainfleet.sim.wire import OpenAI

__all__ = ["EmbeddingCall", "Embeddings", "vector"]

DEFAULT_DIMENSIONS = 1536
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class EmbeddingCall(Call):
    """A :class:`~chainfleet.sim.call.Call` for embeddings: the inputs, and how to send them."""

    inputs: tuple[str, ...] = ()
    dimensions: int = DEFAULT_DIMENSIONS
    base64: bool = False

    @functools.cached_property
    def prompt_tokens(self) -> int:
        """P: the tokens of every input, each counted alone."""
        return sum(simtext.count_tokens(text) for text in self.inputs)


def vector(text: str, dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The unit vector of ``text``: each word adds +-1 at a place its hash picks."""
    values = [0.0] * dimensions
    for word in _WORD.findall(text.lower()) or [text]:
        digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        number = int.from_bytes(digest, "big")
        values[number % dimensions] += 1.0 if number >> 63 else -1.0
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


class Embeddings(OpenAI):
    """``POST /v1/embeddings``."""

    def parse(self, body: Any) -> Call:
        model = messages.model_of(body)
        inputs = _inputs(body.get("input"))
        dimensions = body.get("dimensions")
        dimensions = (
            DEFAULT_DIMENSIONS if dimensions is None else messages.max_tokens_of(dimensions, "dimensions")
        )
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise Failure("bad_body", detail="encoding_format: expected 'float' or 'base64'")
        prompt = "\n\n".join(inputs)
        return EmbeddingCall(
            model, "", prompt, 0, inputs=inputs, dimensions=dimensions, base64=fmt == "base64"
        )

    def answer(self, call: Call, reply: Reply, number: int) -> dict[str, Any]:
        assert isinstance(call, EmbeddingCall)
        data = []
        for index, text in enumerate(call.inputs):
            values = vector(text, call.dimensions)
            packed = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
            data.append(
                {"object": "embedding", "index": index, "embedding": packed if call.base64 else values}
            )
        usage = {"prompt_tokens": call.prompt_tokens, "total_tokens": call.prompt_tokens}
        return {"object": "list", "data": data, "model": call.model, "usage": usage}


def _inputs(value: Any) -> tuple[str, ...]:
    """The texts of ``input``: a string, strings, or token arrays (their numbers as text)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise Failure("bad_body", detail="input: a string or a non-empty list is required")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        value = [value]  # one token array
    texts = []
    for i, item in enumerate(value):
        if (
            isinstance(item, list)
            and item
            and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
        ):
            item = " ".join(map(str, item))
        if not isinstance(item, str) or not item:
            raise Failure("bad_body", detail=f"input.{i}: a non-empty string or token array is required")
        texts.append(item)
    return tuple(texts)
