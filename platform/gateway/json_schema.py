"""Whether a JSON schema a client sent (tool parameters, response formats) is one.

A schema that is not (`{"type": "bogus"}`, `{"minProperties": -1}`) is the client's mistake:
refused with a 400 naming the place, not by an engine that fails to compile it (a 500 from the
simulator before). Every subschema is walked once, without recursion, checking the value of
each keyword engines compile (types, subschemas, bounds, patterns); unknown keywords are
allowed, as JSON Schema allows them. Not a meta-schema validation: jsonschema's took 4 s
(draft 7) to 20 s (2020-12) on the 10 MB tool schema of the hostile-input tests, on the event
loop; this takes about 0.1 s.
"""

from __future__ import annotations

import re
from typing import Any, NoReturn

from pydantic import ValidationInfo

JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")
# Keywords whose value is a schema, a map of names to schemas, or a list of schemas.
_ONE = (
    "additionalProperties", "additionalItems", "contains", "not", "if", "then", "else",
    "propertyNames", "unevaluatedItems", "unevaluatedProperties", "contentSchema",
)  # fmt: skip
_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_COUNTS = (
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
    "minContains", "maxContains",
)  # fmt: skip
_NUMBERS = ("minimum", "maximum", "multipleOf")


class InvalidSchema(ValueError):
    """`schema` is not a JSON schema; the message says where (a path inside it) and why."""


def check_json_schema(schema: Any) -> None:
    """Raise InvalidSchema if `schema` (a dict or boolean) is not a JSON schema."""
    stack: list[tuple[Any, str]] = [(schema, "")]
    while stack:
        node, at = stack.pop()
        if isinstance(node, bool):
            continue
        if not isinstance(node, dict):
            _fail(at, f"a schema must be an object or a boolean, not {json_kind(node)}")
        _check_keywords(node, at)
        for key in _ONE:
            if key in node:
                stack.append((node[key], _join(at, key)))
        for key in _MAPS:
            if key in node:
                value = node[key]
                if not isinstance(value, dict):
                    _fail(_join(at, key), f"must be an object, not {json_kind(value)}")
                stack.extend((v, _join(_join(at, key), k)) for k, v in value.items())
        for key in _LISTS:
            if key in node:
                value = node[key]
                if not isinstance(value, list) or (not value and key != "prefixItems"):
                    _fail(_join(at, key), "must be a non-empty array of schemas")
                stack.extend((v, f"{_join(at, key)}[{i}]") for i, v in enumerate(value))
        if "items" in node:
            items = node["items"]  # a schema, or (drafts 4 to 2019-09) an array of them
            if isinstance(items, list):
                stack.extend((v, f"{_join(at, 'items')}[{i}]") for i, v in enumerate(items))
            else:
                stack.append((items, _join(at, "items")))


def _check_keywords(node: dict[str, Any], at: str) -> None:
    if "type" in node:
        kind = node["type"]
        kinds = kind if isinstance(kind, list) else [kind]
        if not kinds or any(not isinstance(k, str) or k not in JSON_TYPES for k in kinds):
            known = ", ".join(JSON_TYPES)
            _fail(_join(at, "type"), f"{kind!r} is not a JSON schema type ({known})")
    for key in _COUNTS:
        if key in node and not (_is_int(node[key]) and node[key] >= 0):
            _fail(_join(at, key), f"must be a non-negative integer, not {node[key]!r}")
    for key in _NUMBERS:
        value = node.get(key)
        if key in node and not _is_number(value):
            _fail(_join(at, key), f"must be a number, not {value!r}")
    if _is_number(node.get("multipleOf")) and node["multipleOf"] <= 0:
        _fail(_join(at, "multipleOf"), "must be greater than 0")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):  # a bool in draft 4, else a number
        if key in node and not isinstance(node[key], bool) and not _is_number(node[key]):
            _fail(_join(at, key), f"must be a number, not {node[key]!r}")
    required = node.get("required")
    if "required" in node and (
        not isinstance(required, list) or any(not isinstance(r, str) for r in required)
    ):
        _fail(_join(at, "required"), "must be an array of property names")
    if "enum" in node and not isinstance(node["enum"], list):
        _fail(_join(at, "enum"), "must be an array")
    if "pattern" in node:
        pattern = node["pattern"]
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            _fail(_join(at, "pattern"), f"{pattern!r} is not a regular expression ({exc})")
    if "$ref" in node and not isinstance(node["$ref"], str):
        _fail(_join(at, "$ref"), "must be a string")


def _is_int(value: Any) -> bool:
    # JSON Schema counts 2.0 as an integer
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer()
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words ("an array", "null"), for a refusal: the
    client wrote JSON, not Python ("list", "NoneType")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _join(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _fail(at: str, why: str) -> NoReturn:
    where = f" (at {at})" if at else ""
    raise InvalidSchema(f"not a valid JSON schema{where}: {why[:200]}")


# A validation context flag: the body's JSON schemas were checked already, under the field
# names the client wrote (the Anthropic request a chat request is translated from), so the
# chat request's validators do not walk them a second time.
SCHEMAS_CHECKED = "json_schemas_checked"


def valid_json_schema(schema: dict[str, Any], info: ValidationInfo | None = None) -> dict[str, Any]:
    """`schema`, if it is a JSON schema (a field validator: InvalidSchema is a ValueError).
    Validators that pass their `info` skip the walk under the SCHEMAS_CHECKED context."""
    if info is None or not (info.context or {}).get(SCHEMAS_CHECKED):
        check_json_schema(schema)
    return schema
