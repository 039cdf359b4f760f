"""Request headers that Ray Serve itself reads, kept from clients (a Ray Serve HTTP middleware).

Before the gateway sees a request, Ray Serve's HTTP entry (a gateway replica's own HTTP server
behind HAProxy, or Serve's proxy actor) reads a few headers as its own settings, and decodes
them as UTF-8. Two consequences for a client of the fleet:

- a value that was not UTF-8 in any of them (`x-request-id` is the one clients send most)
  raised inside Ray, and the client got uvicorn's plain-text "500 Internal Server Error";
- `x-request-timeout-seconds` (0.3: a plain-text 408 "timed out after Nones" at 0.3 s; 0: no
  timeout), `x-request-disconnect-disabled`, `x-session-id` (stickiness) and
  `serve_multiplexed_model_id` (which Serve passes on to the gateway's calls to its pools) let
  a client change how Ray Serve runs its request: knobs for a deployment's own callers, not
  for callers of an OpenAI- or Anthropic-compatible API.

Ray Serve applies the middlewares that `RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` names (the
local fleet and the chart set it to `CALLBACK`) outside its own request handling, so this one
sees every request first: it drops the knobs and refuses an undecodable request id with a 400
naming the header (the id names the request in answers, logs and traces, so it is kept). The
gateway behind it reads none of the knobs.

The request id is also the engine's request id, so it becomes the completion's id
(`chatcmpl-` and the id), repeated in every event of a stream: a 10 KB id would make each
token's event 10 KB. An id longer than MAX_REQUEST_ID characters is refused: ids in use are
far shorter (a UUID is 36, a W3C traceparent 55)."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gemma_fleet.gateway.app import refuse
from gemma_fleet.gateway.errors import ApiError

CALLBACK = "gemma_fleet.gateway.ray_headers:middlewares"

# Header names as Ray matches them: lower case, "-" and "_" alike
# (ray/serve/_private/constants.py and http_util.py in Ray 2.60).
RAY_SETTINGS = frozenset(
    {
        b"x_request_timeout_seconds",
        b"x_request_disconnect_disabled",
        b"x_session_id",  # RAY_SERVE_SESSION_ID_HEADER_KEY's default; the fleet keeps it
        b"serve_multiplexed_model_id",
    }
)
DECODED_BY_RAY = frozenset({b"x_request_id"})
MAX_REQUEST_ID = 256


def _ray_name(name: bytes) -> bytes:
    return name.lower().replace(b"-", b"_")


def _refusal(header: str, value: bytes) -> str | None:
    """Why Ray must not read `value` as the request id, or None."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return f"header {header} must be UTF-8 text"
    if len(text) > MAX_REQUEST_ID:
        return f"header {header} is {len(text)} characters long: at most {MAX_REQUEST_ID}"
    return None


class RayHeaderGuard:
    """ASGI middleware: requests reach Ray Serve without RAY_SETTINGS headers, and with the
    DECODED_BY_RAY ones decodable and of a bounded length, or are refused with a 400 naming
    the header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            kept = []
            for name, value in scope["headers"]:
                ray_name = _ray_name(name)
                if ray_name in RAY_SETTINGS:
                    continue
                if ray_name in DECODED_BY_RAY:
                    header = name.decode("latin-1")
                    reason = _refusal(header, value)
                    if reason is not None:
                        await refuse(ApiError(400, reason, param=header), scope, receive, send)
                        return
                kept.append((name, value))
            scope["headers"] = kept
        await self.app(scope, receive, send)


def middlewares() -> list[Middleware]:
    """What Ray Serve calls through RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH."""
    return [Middleware(RayHeaderGuard)]
