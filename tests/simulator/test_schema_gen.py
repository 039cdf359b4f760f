"""Schema -> instance generator and pseudo-tokenizer: valid, deterministic output."""

from __future__ import annotations

import random
from typing import Any

import jsonschema
import pytest

from gemma_fleet.deployments.engines.simulator import tokenizer
from gemma_fleet.deployments.engines.simulator.schema_gen import generate

CASES: dict[str, dict[str, Any]] = {
    "patterns": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^(AB|CD)-[0-9]{2,4}[a-f]?$"},
            "phone": {"type": "string", "pattern": "^\\+\\d{1,3} \\d{3}-\\d{4}$"},
            "slug": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$", "maxLength": 40},
        },
        "required": ["code", "phone", "slug"],
        "additionalProperties": False,
    },
    "formats": {
        "type": "object",
        "properties": {
            f: {"type": "string", "format": f}
            for f in ("date", "date-time", "email", "uri", "uuid", "ipv4", "ipv6", "hostname")
        },
        "required": ["date", "date-time", "email", "uri", "uuid", "ipv4"],
    },
    "numbers": {
        "type": "array",
        "prefixItems": [
            {"type": "integer", "minimum": -5, "maximum": -1},
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            {"type": "integer", "multipleOf": 5, "minimum": 12, "maximum": 40},
            {"type": "number", "multipleOf": 0.5, "minimum": 1},
        ],
        "items": False,
        "minItems": 4,
    },
    "composition": {
        "definitions": {"leaf": {"type": "string", "enum": ["x", "y", "z"]}},
        "allOf": [
            {"type": "object", "properties": {"a": {"$ref": "#/definitions/leaf"}},
             "required": ["a"]},
            {"properties": {"b": {"oneOf": [{"type": "boolean"}, {"type": "string"}]}},
             "required": ["b"]},
        ],
        "properties": {"c": {"const": 42}, "d": {"type": "null"}},
        "required": ["c", "d"],
        "minProperties": 4,
    },
    "strings": {
        "type": "array",
        "items": {"type": "string", "minLength": 30, "maxLength": 35},
        "minItems": 2,
        "maxItems": 2,
        "uniqueItems": True,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_generated_instances_validate(name: str) -> None:
    schema = CASES[name]
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for seed in range(40):
        instance = generate(schema, random.Random(seed))
        errors = list(validator.iter_errors(instance))
        assert not errors, (seed, instance, errors[0].message)


def test_generation_is_deterministic_under_a_seed() -> None:
    schema = CASES["composition"]
    assert generate(schema, random.Random(3)) == generate(schema, random.Random(3))


def test_pseudo_tokenizer_is_about_four_characters_per_token() -> None:
    text = "The quick brown fox jumps over the lazy dog, twice; then it rests. " * 20
    ids = tokenizer.encode(text)
    assert "".join(tokenizer.pieces(text)) == text
    assert len(ids) == tokenizer.count(text)
    assert 3.0 <= len(text) / len(ids) <= 5.0
    assert ids == tokenizer.encode(text)  # stable
    assert tokenizer.encode("hello world") != tokenizer.encode("hello there")
