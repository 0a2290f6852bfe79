"""The simulated model's JSON for schemas that would make it endless or enormous: a schema that
refers back to itself through a property recursed without end (RecursionError), and a huge
``minItems`` or ``minLength`` built a reply of gigabytes. Both are bounded; a recursive schema
whose recursion is optional still gets a valid value."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from chainfleet.sim.jsonvalue import generate, reply

LINKED_LIST = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {"value": {"type": "string"}, "next": {"$ref": "#/$defs/node"}},
            "required": ["value"],
        }
    },
    "$ref": "#/$defs/node",
}
TREE = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "kids": {"type": "array", "items": {"$ref": "#"}}},
}


@pytest.mark.parametrize("schema", [LINKED_LIST, TREE], ids=["through $defs", "through #"])
def test_an_optionally_recursive_schema_gets_a_finite_valid_value(schema: dict[str, Any]) -> None:
    value = generate(schema, prompt="Research bees", seed=1)

    jsonschema.validate(value, schema)
    assert len(json.dumps(value)) < 200_000


def test_an_endlessly_required_recursion_is_cut_short() -> None:
    schema = {"type": "object", "required": ["next"], "properties": {"next": {"$ref": "#"}}}

    text = reply(schema, prompt="x")

    assert text.count("next") <= 40


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "minItems": 10**9, "items": {"type": "string", "minLength": 10**9}},
        {"type": "array", "minItems": 10**9, "items": {"type": "array", "minItems": 10**9}},
        {"type": "string", "minLength": 10**12},
    ],
    ids=["items of long strings", "arrays of arrays", "one long string"],
)
def test_huge_sizes_give_a_bounded_reply(schema: dict[str, Any]) -> None:
    assert len(reply(schema, prompt="x")) < 2_000_000  # characters: a reply of about 1 MB at most
