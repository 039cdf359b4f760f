"""Every answer names its request, so a client reporting a problem can say which one and an
operator can find its trace (`gemma_fleet.request_id` on the `gateway.request` span).

Ray Serve's proxy gives each request an id (the client's `x-request-id`, or a new UUID), puts
it in the request's headers and answers with it as `x-request-id`, which the OpenAI SDK reads
(`_request_id`, and `request_id` on its errors). The Anthropic SDK reads `request-id`: the
gateway answers with that too, the same id. Without Ray's proxy in front (the tests' and
benchmarks' gateway under uvicorn) it makes the id itself and answers with both headers."""

from __future__ import annotations

import uuid

from fastapi import Request
from starlette.datastructures import MutableHeaders
from starlette.types import Scope

# Ray Serve's name for it (SERVE_HTTP_REQUEST_ID_HEADER in ray/serve/_private/constants.py).
REQUEST_ID_HEADER = "x-request-id"
ANTHROPIC_REQUEST_ID_HEADER = "request-id"


def request_id(request: Request) -> str:
    """The id `request_id_headers` gave `request` (empty outside the app's middleware)."""
    return request.headers.get(REQUEST_ID_HEADER, "")


def request_id_headers(scope: Scope) -> dict[str, str]:
    """For AnswerHeaders: the request's id, put in its `x-request-id` header when no proxy put
    one there, for the answer's `request-id` (and `x-request-id` when made here: a proxy that
    made one answers with it itself, and a second header would repeat it)."""
    headers = MutableHeaders(scope=scope)
    given = headers.get(REQUEST_ID_HEADER)
    if given:
        return {ANTHROPIC_REQUEST_ID_HEADER: given}
    made = str(uuid.uuid4())
    headers[REQUEST_ID_HEADER] = made
    return {ANTHROPIC_REQUEST_ID_HEADER: made, REQUEST_ID_HEADER: made}
