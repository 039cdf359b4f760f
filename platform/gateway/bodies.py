"""Reading request bodies: JSON under a size limit, parsed into a typed model, every failure a
4xx that names the problem."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, TypeVar

import pydantic_core
from fastapi import Request
from pydantic import BaseModel, ValidationError

from gemma_fleet.gateway.errors import ApiError, validation_error
from gemma_fleet.gateway.json_schema import json_kind

M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request, limit: int, timeout_s: float) -> dict[str, Any]:
    """The request body as a JSON object: 415 for another content type or a compressed body,
    413 above `limit` bytes (checked while reading, so a lying Content-Length does not help),
    408 when it has not all arrived within `timeout_s` (a client trickling its body must not
    hold a connection for as long as it likes), 400 otherwise."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {content_type!r}")
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        # Read as it is, a compressed body was refused as "not UTF-8", which misleads.
        raise ApiError(
            415, f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared):,} bytes exceeds {limit:,}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"request body exceeds {limit:,} bytes")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise ApiError(
            408, f"request body not received within {timeout_s:g} s ({size:,} bytes arrived)"
        ) from exc
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "request body is empty: send a JSON object")
    body = _parsed(raw)
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, not {json_kind(body)}")
    return body


def _parsed(raw: bytes) -> Any:
    """`raw` as JSON. Parsed first by pydantic's Rust parser (jiter): on a 20.8 MB body with
    one image, Python's json holds the event loop for 24 ms and jiter for 2.8 ms
    (benchmarks/gateway_media_stall). What
    jiter refuses goes to Python's json, whose refusals name the problem, and which reads a
    few things jiter does not (a byte-order mark, nesting deeper than 200). A lone surrogate
    escape, which it also reads, is refused here: no engine could encode the text."""
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError:
        pass
    try:
        parsed = json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise ApiError(400, "JSON nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer literal over Python's 4,300-digit limit
        raise ApiError(400, f"JSON value out of range: {exc}") from exc
    if (where := _lone_surrogate(parsed)) is not None:
        raise ApiError(
            400,
            f"Invalid value for {where or 'the request body'}: an unpaired UTF-16 surrogate "
            "escape (\\ud800 to \\udfff) is not a character; escape a character beyond "
            "U+FFFF as a surrogate pair, or send it as UTF-8",
            param=where or None,
        )
    return parsed


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(parsed: Any) -> str | None:
    """Where `parsed` holds a string (or a field name) with an unpaired surrogate, as a field
    path ("" for the body itself); None if nowhere. JSON can spell one (`\\ud800`), Python's
    json reads it, and no engine can encode it as UTF-8."""
    stack: list[tuple[str, Any]] = [("", parsed)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                if not key.isascii() and _SURROGATE.search(key):
                    return path
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return None


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have: refuse them here rather
    # than pass a NaN on to an engine.
    raise ValueError(f"{name} is not a JSON number")


def parse(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc, body) from exc
