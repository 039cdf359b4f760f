"""The gateway's OpenAPI document, with the request models it really validates against.

The API routes read their bodies by hand (bodies.py: size limit, content type, JSON, then the
typed model), so FastAPI cannot see what they accept. This module publishes it: each body's
pydantic model as the operation's request body, the query parameters read from the URL, the
error answers every route can give, and which routes need which credential. Clients and fuzzers
(tests/reliability) read the same document; parsing is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gemma_fleet.gateway.anthropic_models import CountTokensRequest, MessagesRequest
from gemma_fleet.gateway.openai_models import ChatCompletionRequest, CompletionRequest
from gemma_fleet.gateway.responses_models import InputTokensRequest, ResponsesRequest
from gemma_fleet.teams.records import KeyRequest, TeamSpec, TeamUpdate

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    """What one route takes and who may call it."""

    body: type[BaseModel] | None = None
    query: tuple[str, ...] = ()
    credential: str | None = None  # "team" or "admin"; None: open
    errors: tuple[int, ...] = ()
    anthropic_errors: bool = False
    streams: bool = False  # answers JSON or, when asked, server-sent events


_API = (400, 401, 403, 404, 408, 413, 415, 429, 503)
_ADMIN = (400, 401, 404, 503)
_ADMIN_BODY = (*_ADMIN, 408, 409, 413, 415)
_USAGE_QUERY = ("start", "end", "team", "model")

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("post", "/v1/chat/completions"): Operation(
        ChatCompletionRequest, (), "team", _API, streams=True
    ),
    ("post", "/v1/completions"): Operation(CompletionRequest, (), "team", _API, streams=True),
    ("post", "/v1/messages"): Operation(
        MessagesRequest, (), "team", _API, anthropic_errors=True, streams=True
    ),
    ("post", "/v1/responses"): Operation(ResponsesRequest, (), "team", _API, streams=True),
    # Counting spends none of the generation limits, but has a rate of its own (429).
    ("post", "/v1/responses/input_tokens"): Operation(InputTokensRequest, (), "team", _API),
    # Nothing is stored: every id is unknown (404).
    ("get", "/v1/responses/{response_id}"): Operation(errors=(404,)),
    ("delete", "/v1/responses/{response_id}"): Operation(errors=(404,)),
    # Counting spends none of the generation limits, but has a rate of its own (429).
    ("post", "/v1/messages/count_tokens"): Operation(
        CountTokensRequest, (), "team", _API, anthropic_errors=True
    ),
    ("get", "/v1/usage"): Operation(None, _USAGE_QUERY, "team", (400, 401, 403, 404, 503)),
    ("post", "/admin/teams"): Operation(TeamSpec, (), "admin", _ADMIN_BODY),
    ("get", "/admin/teams"): Operation(None, (), "admin", _ADMIN),
    ("get", "/admin/teams/{name}"): Operation(None, (), "admin", _ADMIN),
    ("patch", "/admin/teams/{name}"): Operation(TeamUpdate, (), "admin", _ADMIN_BODY),
    ("delete", "/admin/teams/{name}"): Operation(None, (), "admin", _ADMIN),
    ("post", "/admin/teams/{name}/keys"): Operation(KeyRequest, (), "admin", _ADMIN_BODY),
    ("get", "/admin/teams/{name}/keys"): Operation(None, (), "admin", _ADMIN),
    ("delete", "/admin/keys/{key_id}"): Operation(None, (), "admin", _ADMIN),
    ("get", "/admin/usage"): Operation(None, _USAGE_QUERY, "admin", _ADMIN),
    ("get", "/ready"): Operation(errors=(503,)),
}

_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
_SECURITY_SCHEMES = {
    # Both credentials travel the same way: `Authorization: Bearer` or `x-api-key`.
    "team": {"type": "http", "scheme": "bearer", "description": "a team key (gfk_...)"},
    "admin": {"type": "http", "scheme": "bearer", "description": "GEMMA_FLEET_ADMIN_KEY"},
}
# Only when GEMMA_FLEET_METRICS_TOKEN is set; `Authorization: Bearer` alone.
_METRICS_SCHEME = {"type": "http", "scheme": "bearer", "description": "GEMMA_FLEET_METRICS_TOKEN"}


def gateway_openapi(app: FastAPI, metrics_protected: bool = False) -> Callable[[], dict[str, Any]]:
    """A replacement for `app.openapi` that adds what the hand-read routes accept;
    `metrics_protected`: `/metrics` needs the metrics token."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(
                get_openapi(title=app.title, version=app.version, routes=app.routes),
                metrics_protected,
            )
        return app.openapi_schema

    return openapi


def describe(document: dict[str, Any], metrics_protected: bool = False) -> dict[str, Any]:
    """`document` (FastAPI's) with request bodies, query parameters, error answers and
    security requirements filled in from OPERATIONS, and `/metrics`'s credential."""
    models = {op.body for op in OPERATIONS.values() if op.body is not None}
    refs, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template=REF,
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(defs.get("$defs", {}))
    schemas["Error"] = _OPENAI_ERROR
    schemas["AnthropicError"] = _ANTHROPIC_ERROR
    components["securitySchemes"] = dict(_SECURITY_SCHEMES)
    _describe_metrics(document, metrics_protected)
    for (method, path), op in OPERATIONS.items():
        operation = document["paths"].get(path, {}).get(method)
        if operation is None:
            continue  # a route this app does not serve
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        params = operation.setdefault("parameters", [])
        for name in op.query:
            schema: dict[str, Any] = {"type": "string"}
            if name in ("start", "end"):
                schema["format"] = "date"
            params.append({"name": name, "in": "query", "required": False, "schema": schema})
        if not params:
            del operation["parameters"]
        if op.credential is not None:
            operation["security"] = [{op.credential: []}]
        error = "#/components/schemas/" + ("AnthropicError" if op.anthropic_errors else "Error")
        responses = operation.setdefault("responses", {})
        responses.pop("422", None)  # FastAPI's validation answer: the gateway answers 400
        if op.streams:
            responses["200"] = {
                "description": "the answer: JSON, or server-sent events when stream is true",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    # one server-sent event: `data:` a JSON chunk, or [DONE]
                    "text/event-stream": {
                        "schema": {"type": "object", "properties": {"data": {"type": "string"}}}
                    },
                },
            }
        for status in op.errors:
            responses[str(status)] = {
                "description": _DESCRIPTIONS.get(status, "refused"),
                "content": {"application/json": {"schema": {"$ref": error}}},
            }
    return document


def _describe_metrics(document: dict[str, Any], protected: bool) -> None:
    """`/metrics` stays out of OPERATIONS (an open route, in the fuzzer's list as such); its
    credential, when GEMMA_FLEET_METRICS_TOKEN sets one, is described here."""
    operation = document["paths"].get("/metrics", {}).get("get")
    if operation is None:
        return
    if not protected:
        operation["description"] = "Prometheus text; open (GEMMA_FLEET_METRICS_TOKEN is not set)"
        return
    operation["description"] = "Prometheus text; needs Authorization: Bearer <metrics token>"
    document["components"]["securitySchemes"]["metrics"] = _METRICS_SCHEME
    operation["security"] = [{"metrics": []}]
    operation.setdefault("responses", {})["401"] = error_response(
        "no or a wrong metrics token; WWW-Authenticate: Bearer"
    )


def error_response(description: str) -> dict[str, Any]:
    """An error answer, in OpenAI's shape, for a route that describes it in its decorator:
    the open routes (no body, credential or query to describe) are FastAPI's own in the
    document and stay out of OPERATIONS, whose every route the fuzzer also sends bad input."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_DESCRIPTIONS = {
    400: "malformed or invalid request; the message names the field",
    401: "missing, malformed or unknown credential",
    403: "the team may not use this model or read this team",
    404: "unknown model, team or key",
    408: "the request body was not received in time",
    409: "the team exists already",
    413: "request body too large",
    415: "Content-Type is not application/json",
    429: "a team limit was reached; Retry-After says when to retry",
    503: "no capable pool, or the team store, is available; Retry-After says when to retry",
}
