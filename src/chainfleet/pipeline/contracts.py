"""Output contracts: the JSON Schema a stage's output must match, checked between stages.

A stage's ``output:`` is a JSON Schema given inline, ``{schema_file: schemas/research.json}``
(relative to the pipeline file), or in Python a schema dict or a pydantic model class. The
schema itself is checked when the pipeline loads (against its meta-schema, by ``jsonschema``);
outputs are validated by ``jsonschema`` (or pydantic's ``TypeAdapter`` for a model class), never
by hand. A failed validation is one message naming the field, which the repair call sends back
to the model.

A schema never reaches outside itself: a ``$ref`` is local (``#/$defs/Name``) and must point
somewhere, a loop of ``$ref`` that would never end is refused when the pipeline loads, and the
validator's ``referencing`` registry retrieves nothing (no URL is fetched, no file is read).

Also here: the adaptation of a schema to OpenAI's strict structured-output rules, the schema
appended to a prompt for servers without native structured output, and the tolerant parse of a
reply that wraps its JSON in a fenced block or prose.

Example::

    contract = Contract.from_value({"type": "object", "properties": {"facts": {"type": "array"}},
                                    "required": ["facts"]})
    value, problem = contract.check('{"facts": ["a"]}')   # ({'facts': ['a']}, None)
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "SCHEMA_MARKER",
    "Contract",
    "parse_reply",
    "schema_in_prompt",
    "schema_instructions",
    "strict_schema",
]

#: keywords OpenAI's strict mode rejects; a schema using them cannot be adapted
_STRICT_UNSUPPORTED = (
    "patternProperties",
    "unevaluatedProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "not",
)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)


class Contract:
    """A checked output schema: validates replies and names the field that is wrong."""

    def __init__(self, schema: dict[str, Any], *, model: Any = None, source: str | None = None) -> None:
        self.schema = schema
        #: the pydantic model class the contract came from, if any
        self.model = model
        #: the schema file, when it came from one
        self.source = source
        self._validator: Any = None
        self._adapter: Any = None

    @classmethod
    def from_value(cls, value: Any, *, base: Path | None = None) -> Contract:
        """A contract from ``output:``: a schema dict, ``{schema_file: PATH}``, or a pydantic
        model class. Raises ``ValueError`` with the reason (the pipeline adds file and line)."""
        if isinstance(value, Contract):
            return value
        if isinstance(value, type):
            from pydantic import BaseModel, TypeAdapter

            if not issubclass(value, BaseModel):
                raise ValueError(f"{value.__name__} is not a pydantic model class")
            return cls(TypeAdapter(value).json_schema(), model=value)
        if not isinstance(value, Mapping):
            raise ValueError("must be a JSON Schema (a mapping) or {schema_file: PATH}")
        source = None
        if "schema_file" in value:
            if len(value) != 1:
                raise ValueError("{schema_file: PATH} takes no other keys")
            source, value = _read_schema(value["schema_file"], base)
        schema = dict(value)
        check_schema(schema, source)
        return cls(schema, source=source)

    def check(self, reply: str | Any) -> tuple[Any, str | None]:
        """(value, None) for a reply that parses and validates, else (None, the problem)."""
        if isinstance(reply, str):
            try:
                value = parse_reply(reply)
            except ValueError as exc:
                return None, f"the reply is not JSON ({exc})"
        else:
            value = reply
        value = self._without_optional_nulls(value, self.schema)
        problem = self.problem(value)
        return (None, problem) if problem else (value, None)

    def _without_optional_nulls(self, value: Any, schema: Any) -> Any:
        """A null given for an optional property counts as absent: strict mode (which makes every
        property required) answers null for the ones a model leaves out."""
        node = self._resolve(schema)
        if not isinstance(value, dict) or not isinstance(node, Mapping):
            return value
        props = node.get("properties")
        if not isinstance(props, Mapping):
            return value
        required = set(node.get("required", []))
        return {
            k: self._without_optional_nulls(v, props.get(k))
            for k, v in value.items()
            if not (v is None and k in props and k not in required)
        }

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` against the schema (naming the field), or None."""
        if self.model is not None:
            return self._pydantic_problem(value)
        import jsonschema
        import referencing.exceptions

        if self._validator is None:
            cls = jsonschema.validators.validator_for(self.schema, default=jsonschema.Draft202012Validator)
            self._validator = cls(self.schema, registry=_registry())
        try:
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        except RecursionError:  # refused at load; a Contract built by hand may still loop
            return "the output schema refers to itself in a loop that never ends"
        except referencing.exceptions.Unresolvable as exc:  # likewise: a $ref to elsewhere
            from chainfleet.errors import ConfigError

            raise ConfigError(f"the output schema's {exc}: a schema refers only to its own parts") from exc
        if error is None:
            return None
        return f"{_field(list(error.absolute_path))}: {error.message}"

    def _pydantic_problem(self, value: Any) -> str | None:
        from pydantic import TypeAdapter, ValidationError

        if self._adapter is None:
            self._adapter = TypeAdapter(self.model)
        try:
            self._adapter.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            return f"{_field(list(first['loc']))}: {first['msg']}"
        return None

    def properties(self, path: list[str | int]) -> list[str] | None:
        """The property names of the object at ``path`` (attribute names and indexes from the
        output's root), or None when the schema does not say (any name may be right)."""
        node: Any = self.schema
        for part in path:
            node = self._resolve(node)
            if isinstance(part, int) or part.isdigit():
                node = node.get("items") if isinstance(node, Mapping) else None
            else:
                props = node.get("properties") if isinstance(node, Mapping) else None
                node = props.get(part) if isinstance(props, Mapping) else None
            if node is None:
                return None
        node = self._resolve(node)
        props = node.get("properties") if isinstance(node, Mapping) else None
        return list(props) if isinstance(props, Mapping) else None

    def _resolve(self, node: Any) -> Any:
        """Follow a local ``$ref`` (``#/$defs/Name``, as pydantic writes them)."""
        for _ in range(20):
            ref = node.get("$ref") if isinstance(node, Mapping) else None
            if not isinstance(ref, str) or not ref.startswith("#/"):
                return node
            target: Any = self.schema
            for key in ref[2:].split("/"):
                target = target.get(key) if isinstance(target, Mapping) else None
            node = target
        return node

    def __repr__(self) -> str:
        what = self.model.__name__ if self.model is not None else (self.source or "inline")
        return f"Contract({what})"


def check_schema(schema: Mapping[str, Any], source: str | None = None) -> None:
    """Raise ``ValueError`` unless ``schema`` is valid JSON Schema (checked by its meta-schema)."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        where = f" in {source}" if source else ""
        at = "/".join(str(p) for p in exc.absolute_path) or "the root"
        raise ValueError(f"not a valid JSON Schema{where} (at {at}: {exc.message})") from None
    _check_refs(schema, source)
    _check_sizes(schema, source)


#: the most items, characters or properties a schema may ask a reply for, at least
MAX_ASKED = 100_000
_SIZES = ("minItems", "minLength", "minProperties", "minContains")


def _check_sizes(schema: Any, source: str | None, at: str = "") -> None:
    """Refuse a schema asking for more than :data:`MAX_ASKED` of anything (``minItems:
    1000000000``): no model writes that much, so every item would pay for calls that fail."""
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key in _SIZES and isinstance(value, int | float) and value > MAX_ASKED:
                where = f" in {source}" if source else ""
                raise ValueError(
                    f"{key}: {value:,} at {at or 'the root'}{where}: no model writes that much "
                    f"(at most {MAX_ASKED:,})"
                )
            _check_sizes(value, source, f"{at}/{key}" if at else str(key))
    elif isinstance(schema, list):
        for number, value in enumerate(schema):
            _check_sizes(value, source, f"{at}/{number}")


def _refuse(uri: str) -> NoReturn:
    """The registry's ``retrieve``: a schema never fetches a URL or reads a file."""
    from chainfleet.errors import ConfigError
    from chainfleet.redact import clip

    raise ConfigError(f"$ref {clip(uri)!r}: a schema refers only to itself (#/...); nothing is fetched")


def _registry() -> Any:
    """A ``referencing`` registry that retrieves nothing: only the schema's own parts resolve."""
    import referencing

    return referencing.Registry(retrieve=_refuse)  # type: ignore[call-arg]


_REF_KEYS = ("$ref", "$dynamicRef")
#: keywords whose subschemas apply to the same value: a loop through these alone never ends
_SAME_VALUE = ("allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas")


def _check_refs(schema: Mapping[str, Any], source: str | None) -> None:
    """Every ``$ref`` is local and points somewhere, and no chain of them loops on one value.

    Raises ``ValueError`` naming the place; run time then needs no retrieval and cannot recurse.
    """
    import referencing.exceptions
    import referencing.jsonschema
    from referencing.jsonschema import DRAFT202012

    where = f" in {source}" if source else ""
    resource = referencing.jsonschema.specification_with(
        str(schema.get("$schema", "")), default=DRAFT202012
    ).create_resource(schema)
    resolver = _registry().resolver_with_root(resource)
    targets: dict[int, Any] = {}
    for path, node in _nodes(schema, "#"):
        for key in _REF_KEYS:
            ref = node.get(key)
            if not isinstance(ref, str):
                continue
            if not ref.startswith("#"):
                raise ValueError(
                    f"{key} {ref!r}{where} (at {path}) is not allowed: a schema may refer only to "
                    "its own parts (#/$defs/NAME); use schema_file: for a schema in a file"
                )
            try:
                targets.setdefault(id(node), []).append(resolver.lookup(ref).contents)
            except referencing.exceptions.Unresolvable:
                raise ValueError(
                    f"{key} {ref!r}{where} (at {path}) points to nothing in the schema"
                ) from None
    _check_loops(schema, targets, where)


def _nodes(node: Any, path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """Every mapping in the schema, with its JSON pointer."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    stack: list[tuple[str, Any]] = [(path, node)]
    while stack:
        at, current = stack.pop()
        if isinstance(current, Mapping):
            found.append((at, current))
            data = ("const", "enum", "default", "examples")  # values, not schemas
            stack += [(f"{at}/{k}", v) for k, v in current.items() if k not in data]
        elif isinstance(current, list):
            stack += [(f"{at}/{i}", v) for i, v in enumerate(current)]
    return found


def _check_loops(schema: Mapping[str, Any], targets: dict[int, Any], where: str) -> None:
    """Refuse a cycle of ``$ref`` (and allOf/anyOf/...) that applies to one value forever."""

    def same_value(node: Any) -> list[Any]:
        if not isinstance(node, Mapping):
            return []
        nexts = list(targets.get(id(node), []))
        for key in _SAME_VALUE:
            child = node.get(key)
            if isinstance(child, list):
                nexts += child
            elif key == "dependentSchemas" and isinstance(child, Mapping):
                nexts += list(child.values())
            elif child is not None:
                nexts.append(child)
        return nexts

    done: set[int] = set()
    for at, start in _nodes(schema, "#"):
        if id(start) in done:
            continue
        on_path: set[int] = set()
        stack: list[tuple[Any, bool]] = [(start, False)]
        while stack:
            node, leaving = stack.pop()
            if leaving:
                on_path.discard(id(node))
                done.add(id(node))
                continue
            if id(node) in on_path:
                raise ValueError(
                    f"a $ref{where} (from {at}) leads back to itself without reading any deeper: "
                    "a loop that never ends"
                )
            if id(node) in done:
                continue
            on_path.add(id(node))
            stack.append((node, True))
            stack += [(child, False) for child in same_value(node)]


def _read_schema(path: Any, base: Path | None) -> tuple[str, dict[str, Any]]:
    if not isinstance(path, str) or not path:
        raise ValueError("schema_file must be a path")
    full = Path(path) if base is None or Path(path).is_absolute() else base / path
    try:
        data = json.loads(full.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"schema file {str(full)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read schema file {str(full)!r}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"schema file {str(full)!r} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"schema file {str(full)!r} holds no JSON object")
    return str(full), data


def _field(path: list[Any]) -> str:
    if not path:
        return "the output"
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return f"field {text!r}"


def parse_reply(text: str) -> Any:
    """The JSON value in a model's reply, tolerating a fenced block or prose around it.

    Raises ``ValueError`` when no JSON value can be found.
    """
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    fenced = _FENCE.search(text)
    if fenced:
        try:
            return json.loads(fenced.group(1))
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    error = "no JSON object in it"
    for match in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
            return value
        except ValueError as exc:
            error = str(exc)
    raise ValueError(error)


#: the words before the schema that :func:`schema_instructions` appends
SCHEMA_MARKER = "Answer with one JSON value that matches this JSON Schema, and nothing else:\n"


def schema_instructions(schema: Mapping[str, Any]) -> str:
    """What ``structured: prompt`` appends to a prompt: the schema, and how to answer."""
    return "\n\n" + SCHEMA_MARKER + json.dumps(schema, indent=1, sort_keys=True)


def schema_in_prompt(prompt: str) -> dict[str, Any] | None:
    """The schema :func:`schema_instructions` put in ``prompt`` (the last one), or None.

    The simulated server reads it to answer a ``structured: prompt`` or JSON-mode request
    with JSON, as a model following the instructions would."""
    at = prompt.rfind(SCHEMA_MARKER)
    if at < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(prompt, at + len(SCHEMA_MARKER))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` adapted to OpenAI's strict structured outputs.

    Strict mode wants every object closed (``additionalProperties: false``) with every property
    required; an optional property becomes required but nullable. Raises ``ValueError`` naming
    the place and keyword that strict mode cannot express (e.g. ``patternProperties``).
    """
    adapted = copy.deepcopy(dict(schema))
    if adapted.get("type") != "object":
        raise ValueError("strict mode needs an object at the root (type: object)")
    _strict(adapted, "#")
    return adapted


def _strict(node: Any, where: str) -> None:
    if isinstance(node, list):
        for i, child in enumerate(node):
            _strict(child, f"{where}/{i}")
        return
    if not isinstance(node, dict):
        return
    for keyword in _STRICT_UNSUPPORTED:
        if keyword in node:
            raise ValueError(f"strict mode cannot express {keyword!r} (at {where})")
    if node.get("type") == "object" or "properties" in node:
        extra = node.get("additionalProperties", False)
        if extra is not False:
            raise ValueError(f"strict mode needs additionalProperties: false (at {where})")
        node["additionalProperties"] = False
        props = node.setdefault("properties", {})
        required = set(node.get("required", []))
        for name, sub in props.items():
            if name not in required and isinstance(sub, dict):
                _nullable(sub)
        node["required"] = list(props)
    for key in ("properties", "$defs", "definitions"):
        for name, child in (node.get(key) or {}).items():
            _strict(child, f"{where}/{key}/{name}")
    for key in ("items", "anyOf", "prefixItems"):
        if key in node:
            _strict(node[key], f"{where}/{key}")


def _nullable(sub: dict[str, Any]) -> None:
    kind = sub.get("type")
    if isinstance(kind, str) and kind != "null":
        sub["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        sub["type"] = [*kind, "null"]
    elif kind is None and "anyOf" in sub:
        sub["anyOf"] = [*sub["anyOf"], {"type": "null"}]


def template_paths(ast: Any) -> list[tuple[str, list[str | int]]]:
    """Every ``name.attr[0].attr`` a parsed Jinja2 template reads: (name, [attr, 0, attr]).

    A subscript that is not a constant (``sources[i]``) reads as index 0: any item of a list.
    """
    from jinja2 import nodes

    found: list[tuple[str, list[str | int]]] = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        path: list[str | int] = []
        current: Any = node
        while isinstance(current, nodes.Getattr | nodes.Getitem):
            if isinstance(current, nodes.Getattr):
                path.append(current.attr)
            elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str | int):
                path.append(current.arg.value)
            else:
                path.append(0)
            current = current.node
        if isinstance(current, nodes.Name):
            found.append((current.name, path[::-1]))
    return found


#: attribute names a template may call on any mapping or list (``research.items()``)
_METHODS = frozenset({"items", "keys", "values", "get"})


def unknown_property(contract: Contract, path: list[str | int]) -> tuple[str, list[str]] | None:
    """The first name in ``path`` the schema does not have, with the names it does have."""
    for i, part in enumerate(path):
        if not isinstance(part, str) or part.isdigit():
            continue
        known = contract.properties(path[:i])
        if known is None:
            return None
        if part not in known:
            return None if part in _METHODS else (part, known)
    return None
