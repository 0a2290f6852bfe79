"""Schema-driven JSON for the simulated model: valid, plausible, deterministic.

Given a JSON Schema, :func:`generate` returns a value that validates against it and reads like an
answer to the prompt: strings are sentences of the simulated model's own text for the prompt,
URLs and titles look like URLs and titles, arrays have a plausible length. It depends only on
(seed, prompt, schema), so the same chain gives the same structured outputs at any concurrency.

Bounded whatever the schema: a recursive schema (a ``$ref`` back up through a property) is
followed :data:`DEEP` levels with everything optional, then only what it requires, and never past
:data:`DEEPEST`; an array has at most :data:`MAX_ITEMS` items, a string at most
:data:`MAX_LENGTH` characters, and a reply at most :data:`MAX_VALUES` values and
:data:`MAX_CHARS` characters of strings. Past a bound the
reply is cut short (and fails the schema, as a model's reply that gave up would), never huge.

A property named ``score`` (what a judge answers) leans towards the top of its range, so most
drafts pass a judge at threshold 7, some fail the first time, and a revision (another draft,
another score) usually passes.

:func:`malformed` is what ``sim: {invalid_output_rate: F}`` sends instead: JSON cut off, or an
object missing a required property, to rehearse repairs.

Example::

    generate({"type": "object", "properties": {"facts": {"type": "array",
              "items": {"type": "string"}}}}, prompt="Research bees", seed=0)
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
from collections.abc import Mapping
from typing import Any

from chainfleet.sim import text as simtext

__all__ = ["generate", "malformed", "off_schema", "reply"]

#: levels of nesting with optional properties and array items; below, only what is required
DEEP = 5
#: levels of nesting at all: a schema that requires more (an endless required recursion) is cut
DEEPEST = 32
#: items of one array, characters of one string; values and string characters of one reply
MAX_ITEMS, MAX_LENGTH, MAX_VALUES, MAX_CHARS = 1_000, 100_000, 100_000, 1_000_000

_SENTENCE = re.compile(r"[^.!?\n]*[A-Za-z][^.!?\n]*[.!?]")
_FEEDBACK = (
    "Tighten the opening and give each claim a source.",
    "Add a concrete example and cut the repetition in the middle.",
    "The structure is clear; the conclusion needs a sharper point.",
    "Explain the key term earlier and shorten the longest sentences.",
    "Good coverage; add one figure and name the open question.",
)


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8", "surrogatepass")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@functools.lru_cache(maxsize=1024)
def _sentences(prompt: str, seed: int) -> tuple[str, ...]:
    text = simtext.generate(prompt, seed=seed, max_tokens=600)
    bare = (s.strip().removeprefix("- ") for s in _SENTENCE.findall(text))
    found = tuple(dict.fromkeys(s for s in bare if len(s.split()) >= 4))  # once each, in order
    return found or ("The evidence points in one direction, with open questions left.",)


def reply(schema: Mapping[str, Any], *, prompt: str, seed: int = 0) -> str:
    """The simulated model's JSON reply to ``prompt`` for ``schema``, as text."""
    return json.dumps(generate(schema, prompt=prompt, seed=seed), ensure_ascii=False)


def generate(schema: Mapping[str, Any], *, prompt: str, seed: int = 0) -> Any:
    """A value valid against ``schema``, plausible for ``prompt``, a function of the three."""
    key = json.dumps(schema, sort_keys=True, default=str)
    maker = _Maker(schema, _rng(seed, prompt, key), _sentences(prompt, seed), _subject(prompt))
    return maker.value(schema, "")


def malformed(schema: Mapping[str, Any], *, prompt: str, seed: int = 0) -> str:
    """An invalid reply: JSON cut off mid-way, or an object without a required property."""
    rng = _rng(seed, "malformed", prompt)
    value = generate(schema, prompt=prompt, seed=seed)
    required = schema.get("required") if isinstance(schema, Mapping) else None
    if isinstance(value, dict) and required and rng.random() < 0.5:
        value.pop(required[0], None)
        return json.dumps(value, ensure_ascii=False)
    text = json.dumps(value, ensure_ascii=False)
    return text[: max(1, len(text) // 2)]


def off_schema(schema: Mapping[str, Any], *, prompt: str, seed: int = 0) -> Any:
    """An invalid value that still parses: the object without its first required property
    (what a tool call's input, always an object, can get wrong)."""
    value = generate(schema, prompt=prompt, seed=seed)
    required = schema.get("required") if isinstance(schema, Mapping) else None
    if isinstance(value, dict) and required:
        value.pop(required[0], None)
    return value


def _subject(prompt: str) -> str:
    """What the prompt is about, read as the prose model reads it (past a system line)."""
    return simtext.topic(prompt) if prompt.strip() else "the topic"


def _is_null(schema: Any) -> bool:
    """Whether an ``anyOf`` option is ``{"type": "null"}`` (an option may be ``true`` or ``false``)."""
    return isinstance(schema, Mapping) and schema.get("type") == "null"


class _Maker:
    def __init__(
        self, root: Mapping[str, Any], rng: random.Random, sentences: tuple[str, ...], subject: str
    ) -> None:
        self.root, self.rng, self.sentences, self.subject = root, rng, sentences, subject
        self.depth = 0  # how deep the value being made is
        self.made = 0  # values made so far (MAX_VALUES at most)
        self.chars = 0  # characters of strings made so far (MAX_CHARS at most)
        self.used: set[str] = set()

    def value(self, schema: Any, name: str) -> Any:
        self.made += 1
        if self.depth >= DEEPEST or self.made > MAX_VALUES:
            return None  # cut short: no finite value, or a huge one, is what the schema asks
        self.depth += 1
        try:
            return self._value(self._resolve(schema), name)
        finally:
            self.depth -= 1

    def _value(self, schema: Any, name: str) -> Any:
        if not isinstance(schema, Mapping):
            return self._string({}, name)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(list(schema["enum"]))
        for key in ("anyOf", "oneOf", "allOf"):
            if schema.get(key):
                options = [o for o in schema[key] if not _is_null(self._resolve(o))] or schema[key]
                return self.value(options[0], name)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else ("array" if "items" in schema else "string")
        return getattr(self, f"_{kind}", self._string)(schema, name)

    def _resolve(self, schema: Any) -> Any:
        for _ in range(20):
            ref = schema.get("$ref") if isinstance(schema, Mapping) else None
            if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
                break
            target: Any = self.root
            for part in ref[2:].split("/") if ref != "#" else ():
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
            schema = target
        return schema

    def _object(self, schema: Mapping[str, Any], name: str) -> dict[str, Any]:
        props = schema.get("properties") or {}
        if self.depth > DEEP:  # deep in a recursive schema: only what it requires
            required = schema.get("required") or ()
            props = {key: sub for key, sub in props.items() if key in required}
        return {key: self.value(sub, key) for key, sub in props.items()}

    def _array(self, schema: Mapping[str, Any], name: str) -> list[Any]:
        low = min(int(schema.get("minItems", 3 if name else 1)), MAX_ITEMS)
        high = min(int(schema.get("maxItems", max(low, 5))), MAX_ITEMS)
        if self.depth > DEEP:
            low = high = min(int(schema.get("minItems", 0)), MAX_ITEMS)
        count = self.rng.randint(low, max(low, high))
        items = schema.get("items", {"type": "string"})
        singular = name[:-1] if name.endswith("s") else name
        values = [self.value(items, singular) for _ in range(count)]
        if schema.get("uniqueItems"):
            values = [v if v not in values[:i] else f"{v} ({i})" for i, v in enumerate(values)]
        return values

    def _number(self, schema: Mapping[str, Any], name: str) -> float:
        low = float(schema.get("minimum", 0))
        high = float(schema.get("maximum", low + 100))
        share = self.rng.random()
        if name == "score":  # a judge: most drafts pass at 7 of 10, not all
            share = 0.3 + 0.7 * share**0.5
        return round(low + (high - low) * share, 1)

    def _integer(self, schema: Mapping[str, Any], name: str) -> int:
        low = int(schema.get("minimum", 0))
        high = int(schema.get("maximum", low + 100))
        return self.rng.randint(low, max(low, high))  # maximum < minimum: no value fits; give one

    def _boolean(self, schema: Mapping[str, Any], name: str) -> bool:
        return self.rng.random() < 0.5

    def _null(self, schema: Mapping[str, Any], name: str) -> None:
        return None

    def _string(self, schema: Mapping[str, Any], name: str) -> str:
        if self.chars >= MAX_CHARS:
            return ""  # cut short: the reply is as long as a reply gets
        lowered = name.lower()
        slug = re.sub(r"[^a-z0-9]+", "-", self.subject.lower()).strip("-") or "topic"
        if schema.get("format") in ("uri", "url") or lowered in ("url", "uri", "link", "href"):
            return f"https://example.org/{slug}/{self.rng.randint(100, 999)}"
        if lowered in ("title", "name", "headline"):
            return f"{self.subject.title()}: {self.rng.choice(('An Overview', 'What We Know', 'Key Facts'))}"
        if lowered == "feedback":
            text = self.rng.choice(_FEEDBACK)
        else:
            text = self._sentence(lowered)
        low = min(int(schema.get("minLength", 0)), MAX_LENGTH, max(0, MAX_CHARS - self.chars))
        high = schema.get("maxLength")
        while len(text) < low:
            text += " " + self.rng.choice(self.sentences)
        text = text[: int(high)] if high is not None else text
        self.chars += len(text)
        return text

    def _sentence(self, name: str) -> str:
        """A sentence of the notes on the subject: a question for a field of questions, a
        statement for any other, each used once while fresh ones last (so no list repeats)."""
        asking = "question" in name
        pool = [s for s in self.sentences if s.endswith("?") == asking] or list(self.sentences)
        fresh = [s for s in pool if s not in self.used] or pool
        text = self.rng.choice(fresh)
        self.used.add(text)
        return text
