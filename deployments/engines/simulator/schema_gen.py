"""Generate a JSON instance that validates against a JSON schema, deterministically from an RNG.

Covers what tool parameters and response_format schemas use in practice: objects (properties,
required, additionalProperties, min/maxProperties), arrays (items, prefixItems, min/maxItems,
uniqueItems), strings (enum, const, min/maxLength, format, pattern via Python's own regex
parser), numbers and integers (bounds, exclusive bounds, multipleOf), booleans, null, local
$ref ($defs/definitions), allOf (merged), anyOf/oneOf (first branch), type lists.
"""

from __future__ import annotations

import importlib
import math
import random
import string
from typing import Any

_sre_parse: Any = importlib.import_module("re._parser")
_sre_constants: Any = importlib.import_module("re._constants")

_WORDS = (
    "alpha bravo cedar delta ember fjord grove harbor iris jade kestrel lumen meadow nova "
    "orchid pebble quartz river summit tundra umber violet willow xenon yarrow zephyr"
)
WORDS = _WORDS.split(" ")


class SchemaError(ValueError):
    """The schema cannot be satisfied by this generator; `param` names the request field that
    holds it, when known (the engine answers 400 naming it)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def generate(schema: Any, rng: random.Random, root: Any = None) -> Any:
    """An instance of `schema` (a JSON-schema dict or boolean)."""
    return _Gen(rng, schema if root is None else root).value(schema, 0)


class _Gen:
    def __init__(self, rng: random.Random, root: Any) -> None:
        self.rng = rng
        self.root = root

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#"):
                raise SchemaError(f"only local $ref is supported, got {ref!r}")
            node: Any = self.root
            for part in [p for p in ref[1:].split("/") if p]:
                node = node[part.replace("~1", "/").replace("~0", "~")]
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**node, **rest} if isinstance(node, dict) else node
            seen += 1
            if seen > 32:
                raise SchemaError("recursive $ref")
        return schema

    def value(self, schema: Any, depth: int) -> Any:
        if schema is True or schema == {}:
            return self.rng.choice(WORDS)
        if schema is False:
            raise SchemaError("schema false has no instance")
        if not isinstance(schema, dict):
            raise SchemaError(f"not a schema: {schema!r}")
        schema = self.resolve(schema)
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part) if isinstance(part, dict) else {}
                props = {**merged.get("properties", {}), **part.get("properties", {})}
                required = [*merged.get("required", []), *part.get("required", [])]
                merged = {**merged, **part, "properties": props, "required": required}
            schema = merged
        for key in ("oneOf", "anyOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                branch = self.resolve(schema[key][0]) if schema[key] else {}
                return self.value({**rest, **branch}, depth)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.rng.choice(list(schema["enum"]))
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((t for t in kind if t != "null"), "null")
        if kind is None:
            if "properties" in schema or "required" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            elif any(k in schema for k in ("minimum", "maximum", "multipleOf")):
                kind = "number"
            else:
                kind = "string"
        handler = {
            "object": self.obj,
            "array": self.arr,
            "string": self.string,
            "integer": self.integer,
            "number": self.number,
        }.get(kind)
        if handler is not None:
            return handler(schema, depth)
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        raise SchemaError(f"unknown type {kind!r}")

    def obj(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties", {})
        required = list(dict.fromkeys(schema.get("required", [])))
        out: dict[str, Any] = {}
        for name in required:
            out[name] = self.value(props.get(name, {"type": "string"}), depth + 1)
        for name, sub in props.items():
            if name not in out and depth < 3 and self.rng.random() < 0.5:
                out[name] = self.value(sub, depth + 1)
        max_props = schema.get("maxProperties")
        if max_props is not None:
            for name in [n for n in out if n not in required][: max(0, len(out) - max_props)]:
                del out[name]
        for name, sub in props.items():
            if len(out) >= schema.get("minProperties", 0):
                break
            out.setdefault(name, self.value(sub, depth + 1))
        extra = schema.get("additionalProperties", True)
        i = 0
        while len(out) < schema.get("minProperties", 0):
            if extra is False:
                raise SchemaError("minProperties cannot be met without additionalProperties")
            out[f"key_{i}"] = self.value(extra if isinstance(extra, dict) else {}, depth + 1)
            i += 1
        return out

    def arr(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-04 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        lo = max(schema.get("minItems", 0), len(prefix) if schema.get("minItems") else 0)
        hi = schema.get("maxItems", max(lo, 3))
        n = max(lo, min(hi, self.rng.randint(1, 3) if depth < 3 else lo))
        out: list[Any] = []
        for i in range(n):
            sub = prefix[i] if i < len(prefix) else items
            if sub is False:
                break
            for _ in range(20):
                candidate = self.value(sub, depth + 1)
                if not schema.get("uniqueItems") or candidate not in out:
                    break
            else:
                raise SchemaError("cannot make unique items")
            out.append(candidate)
        return out

    def string(self, schema: dict[str, Any], depth: int) -> str:
        fmt = schema.get("format")
        if "pattern" in schema:
            text = self.from_pattern(schema["pattern"])
        elif fmt == "date-time":
            text = f"2026-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}T12:00:00Z"
        elif fmt == "date":
            text = f"2026-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}"
        elif fmt == "time":
            text = f"{self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}:00Z"
        elif fmt == "email":
            text = f"{self.rng.choice(WORDS)}@example.com"
        elif fmt in ("uri", "url", "uri-reference", "iri"):
            text = f"https://example.com/{self.rng.choice(WORDS)}"
        elif fmt == "uuid":
            bits = [self.rng.getrandbits(n) for n in (32, 16, 12, 12, 48)]
            text = f"{bits[0]:08x}-{bits[1]:04x}-4{bits[2]:03x}-8{bits[3]:03x}-{bits[4]:012x}"
        elif fmt == "ipv4":
            text = ".".join(str(self.rng.randint(1, 254)) for _ in range(4))
        elif fmt == "ipv6":
            text = ":".join(f"{self.rng.getrandbits(16):x}" for _ in range(8))
        elif fmt == "hostname":
            text = f"{self.rng.choice(WORDS)}.example.com"
        else:
            text = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 4)))
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        if "pattern" not in schema and fmt is None:
            while len(text) < lo:
                text += " " + self.rng.choice(WORDS)
            if hi is not None:
                text = text[:hi].rstrip() if len(text[:hi].rstrip()) >= lo else text[:hi]
        return text

    def from_pattern(self, pattern: str) -> str:
        try:
            parsed = _sre_parse.parse(pattern)
        except Exception as exc:
            raise SchemaError(f"bad pattern {pattern!r}") from exc
        return self._emit(list(parsed))

    def _emit(self, items: list[Any]) -> str:
        c = _sre_constants
        out: list[str] = []
        for op, arg in items:
            if op is c.LITERAL:
                out.append(chr(arg))
            elif op is c.NOT_LITERAL:
                out.append("a" if arg != ord("a") else "b")
            elif op is c.ANY:
                out.append(self.rng.choice(string.ascii_lowercase))
            elif op is c.IN:
                out.append(self._in(arg))
            elif op is c.BRANCH:
                out.append(self._emit(list(self.rng.choice(arg[1]))))
            elif op is c.SUBPATTERN:
                out.append(self._emit(list(arg[-1])))
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
                lo, hi, sub = arg
                hi = lo + 3 if hi is c.MAXREPEAT else hi
                for _ in range(self.rng.randint(lo, max(lo, min(hi, lo + 3)))):
                    out.append(self._emit(list(sub)))
            elif op is c.CATEGORY:
                out.append(self._category(arg))
            elif op in (c.AT, getattr(c, "ASSERT", None), getattr(c, "ASSERT_NOT", None)):
                continue
            else:
                raise SchemaError(f"unsupported regex construct {op}")
        return "".join(out)

    def _category(self, cat: Any) -> str:
        c = _sre_constants
        if cat is c.CATEGORY_DIGIT:
            return self.rng.choice(string.digits)
        if cat is c.CATEGORY_SPACE:
            return " "
        if cat is c.CATEGORY_WORD:
            return self.rng.choice(string.ascii_letters + string.digits)
        if cat is c.CATEGORY_NOT_DIGIT:
            return self.rng.choice(string.ascii_letters)
        return "x"

    def _in(self, ranges: list[Any]) -> str:
        c = _sre_constants
        if ranges and ranges[0][0] is c.NEGATE:
            excluded = {chr(a) for op, a in ranges[1:] if op is c.LITERAL}
            return next(ch for ch in string.ascii_letters + string.digits if ch not in excluded)
        op, arg = self.rng.choice(ranges)
        if op is c.LITERAL:
            return chr(arg)
        if op is c.RANGE:
            return chr(self.rng.randint(arg[0], arg[1]))
        if op is c.CATEGORY:
            return self._category(arg)
        raise SchemaError(f"unsupported character class item {op}")

    def _bounds(self, schema: dict[str, Any]) -> tuple[float, float]:
        lo = schema.get("minimum", -math.inf)
        hi = schema.get("maximum", math.inf)
        ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if isinstance(ex_lo, bool):  # draft-04 booleans
            ex_lo = lo if ex_lo else None
        if isinstance(ex_hi, bool):
            ex_hi = hi if ex_hi else None
        return (
            lo if ex_lo is None else max(lo, ex_lo),
            hi if ex_hi is None else min(hi, ex_hi),
        )

    def integer(self, schema: dict[str, Any], depth: int) -> int:
        lo, hi = self._bounds(schema)
        strict_lo = schema.get("exclusiveMinimum") not in (None, False) and lo != -math.inf
        strict_hi = schema.get("exclusiveMaximum") not in (None, False) and hi != math.inf
        if lo != -math.inf:
            ilo = math.floor(lo) + 1 if strict_lo and float(lo).is_integer() else math.ceil(lo)
        if hi != math.inf:
            ihi = math.ceil(hi) - 1 if strict_hi and float(hi).is_integer() else math.floor(hi)
        if lo == -math.inf:
            ilo = min(0, ihi) if hi != math.inf else 0
        if hi == math.inf:
            ihi = ilo + 100
        step = schema.get("multipleOf", 1)
        if not float(step).is_integer():
            raise SchemaError("integer with a fractional multipleOf")
        step = int(step)
        first = -(-ilo // step) * step
        count = (ihi - first) // step
        if count < 0:
            raise SchemaError("no integer in range")
        return int(first + step * self.rng.randint(0, count))

    def number(self, schema: dict[str, Any], depth: int) -> float | int:
        lo, hi = self._bounds(schema)
        if "multipleOf" in schema:
            step = schema["multipleOf"]
            k_lo = math.ceil(lo / step) if lo != -math.inf else 0
            k_hi = math.floor(hi / step) if hi != math.inf else k_lo + 100
            if k_lo * step == lo and schema.get("exclusiveMinimum") is not None:
                k_lo += 1
            if k_hi * step == hi and schema.get("exclusiveMaximum") is not None:
                k_hi -= 1
            if k_hi < k_lo:
                raise SchemaError("no multiple of multipleOf in range")
            k = self.rng.randint(k_lo, k_hi)
            return k * step if isinstance(step, int) else round(k * step, 12)
        lo = lo if lo != -math.inf else (min(0.0, hi - 100) if hi != math.inf else 0.0)
        hi = hi if hi != math.inf else lo + 100
        value = round(lo + (hi - lo) * (0.1 + 0.8 * self.rng.random()), 3)
        return value if lo <= value <= hi and value not in (lo, hi) else (lo + hi) / 2
