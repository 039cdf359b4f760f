"""The middleware that keeps Ray Serve's own request headers from clients (gateway/ray_headers.py),
around a small app that shows what reached it. Through a real local fleet (HAProxy and Ray
Serve's direct ingress): tests/fleet/test_local_fleet.py."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from ray.serve._private.utils import call_function_from_import_path
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gemma_fleet.gateway.ray_headers import CALLBACK, MAX_REQUEST_ID, RayHeaderGuard


async def _seen(request: Request) -> JSONResponse:
    return JSONResponse(
        {k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]}
    )


def _client() -> httpx.AsyncClient:
    app = Starlette(
        routes=[Route("/{path:path}", _seen, methods=["POST"])],
        middleware=[Middleware(RayHeaderGuard)],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def _post(path: str, headers: dict[str, Any]) -> httpx.Response:
    async def post() -> httpx.Response:
        async with _client() as client:
            return await client.post(path, headers=headers)

    return asyncio.run(post())


def test_rays_settings_never_reach_it_and_other_headers_do() -> None:
    sent = {
        "x-request-timeout-seconds": "0.2",
        "X-Request-Disconnect-Disabled": "?1",
        "serve-multiplexed-model-id": "m",
        "serve_multiplexed_model_id": "m",
        "x-session-id": b"caf\xe9",
        "x-request-id": "caf\u00e9".encode(),
        "x-custom": b"caf\xe9",
    }
    seen = (_post("/v1/chat/completions", sent)).json()
    assert not {"x-request-timeout-seconds", "x-request-disconnect-disabled"} & set(seen)
    assert not {"serve-multiplexed-model-id", "serve_multiplexed_model_id"} & set(seen)
    assert "x-session-id" not in seen
    # The request id, UTF-8, passes; a header Ray does not read passes as sent.
    assert seen["x-request-id"] == "caf\u00e9".encode().decode("latin-1")
    assert seen["x-custom"] == "caf\xe9"


@pytest.mark.parametrize("header", ["x-request-id", "X-Request-Id", "x_request_id"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_an_undecodable_value_ray_would_read_is_a_400_naming_the_header(
    header: str, path: str
) -> None:
    r = _post(path, {header: b"caf\xe9"})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["message"] == f"header {header.lower()} must be UTF-8 text"
    # In the dialect of the route: Anthropic's clients read Anthropic's shape.
    assert (body.get("type") == "error") == (path == "/v1/messages")
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_request_id_longer_than_the_bound_is_a_400_naming_its_length(path: str) -> None:
    """The id becomes the completion's id, in every event of a stream; through HAProxy, a
    stream's answer with an id of 7,390 characters was a plain-text 500."""
    longest = "\u00e9" * MAX_REQUEST_ID  # characters, not bytes (512 of them)
    assert _post(path, {"x-request-id": longest.encode()}).json()["x-request-id"]
    r = _post(path, {"x-request-id": "r" * (MAX_REQUEST_ID + 1)})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert message == f"header x-request-id is {MAX_REQUEST_ID + 1} characters long: at most 256"
    assert (r.json().get("type") == "error") == (path == "/v1/messages")


def test_ray_finds_the_middleware_where_the_fleet_and_chart_point_it() -> None:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH is called by Ray's own loader."""
    found = call_function_from_import_path(CALLBACK)
    assert [m.cls for m in found] == [RayHeaderGuard]
