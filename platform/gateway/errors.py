"""Errors the gateway answers with, in OpenAI's (and Anthropic's) JSON formats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gemma_fleet.gateway.unserved import UNSERVED

if TYPE_CHECKING:
    from gemma_fleet.teams.limits import MinuteWindow

# OpenAI error `type` by HTTP status, as its API answers them.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


@dataclass
class ApiError(Exception):
    """An error a client should see: status, a message naming the problem, and optionally the
    offending parameter, seconds to wait before retrying, and where the team's minute stands
    (`window`, for a limit's refusal: its headers are written in the client's dialect)."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    retry_after_s: int | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    window: MinuteWindow | None = None
    # Anthropic's machine-readable `error.details` (its SDKs branch on `error_code`).
    details: dict[str, Any] | None = None

    def __str__(self) -> str:
        return self.message

    def headers(self) -> dict[str, str]:
        retry = {} if self.retry_after_s is None else {"retry-after": str(self.retry_after_s)}
        return {**self.extra_headers, **retry}

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _OPENAI_TYPES.get(self.status, "api_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def anthropic_body(self) -> dict[str, Any]:
        kind = _ANTHROPIC_TYPES.get(self.status, "api_error")
        error: dict[str, Any] = {"type": kind, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"type": "error", "error": error}

    def sse_event(self) -> str:
        """The error as one server-sent event, for failures after a stream has started."""
        return f"data: {json.dumps(self.openai_body())}\n\n"


_BRANCH_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def field_path(loc: tuple[Any, ...], body: Any) -> str:
    """`loc` as the client wrote it (`messages[0].content[1].input_audio.format`): the segments
    pydantic adds for unions (branch names, discriminator tags) are not keys of the body, so
    they are dropped."""
    out, node = "", body
    for i, seg in enumerate(loc):
        if isinstance(node, dict) and isinstance(seg, str):
            is_tag = seg in (node.get("type"), node.get("role"))
            if is_tag and (seg not in node or loc[i + 1 : i + 2] == (seg,)):
                continue  # the tag of a discriminated union (`input_audio` then the key)
            if seg in node:
                out, node = (f"{out}.{seg}" if out else seg), node[seg]
            elif loc[i + 1 : i + 2] and loc[i + 1] in node:
                continue  # a tag the union computed (a Responses message has no `type`)
            elif "[" not in seg and seg not in _BRANCH_NAMES:
                out, node = (f"{out}.{seg}" if out else seg), None  # missing or extra key
        elif isinstance(node, list) and isinstance(seg, int) and 0 <= seg < len(node):
            out, node = f"{out}[{seg}]", node[seg]
    return out


def validation_error(exc: ValidationError, body: Any = None) -> ApiError:
    """A request body that failed validation: name the field and what is wrong. A union (a
    message's content may be a string or a list of parts) fails once per branch; the deepest
    location is the branch the client meant; at equal depth, a branch of the value's own type
    (a list of five stop sequences is too long, not "a valid string")."""
    first = max(exc.errors(), key=lambda e: (len(e["loc"]), not e["type"].endswith("_type")))
    # A validator's own words, without pydantic's label for the exception class.
    reason = str(first["msg"]).removeprefix("Value error, ")
    where = (
        field_path(tuple(first["loc"]), body)
        if body is not None
        else ".".join(str(p) for p in first["loc"])
    )
    if first["type"] == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {where}"
    elif first["type"] == UNSERVED:
        message = f"{where} is not served by this gateway: {reason}"
    elif first["type"] == "missing":
        message = f"Missing required parameter: {where}"
    elif not where:  # a rule across fields: its message names them
        message = f"Invalid request: {reason}"
    else:
        message = f"Invalid value for {where}: {reason}"
    return ApiError(400, message, param=where or None)
