"""How the gateway talks to pools. Every pool is a Ray Serve LLM deployment (PoolServer, an
LLMServer) whichever engine is behind it, so one client serves both kinds. Requests and replies
are plain data (deployments/engines/wire.py): the gateway's process never imports vLLM.

Every client sends the caller's trace context on (W3C traceparent): as an HTTP header, or as
the `RawRequestInfo` headers LLMServer hands to its engine, where the simulator opens its
engine.generate span under it and vLLM's serving layer reads it for its own tracing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from gemma_fleet.deployments.engines.wire import (
    EngineError,
    JsonReply,
    Method,
    Reply,
    SseReply,
    engine_request,
    invalid_request,
    param_of,
    pool_call,
    raw_request_info,
    replies,
)
from gemma_fleet.telemetry import inject_headers

__all__ = ["EngineError", "JsonReply", "Method", "Reply", "SseReply"]

_HTTP_PATHS: dict[str, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "tokenize": "/tokenize",
}


class PoolUnavailable(Exception):
    """The pool could not take the call (no replica, replica died before answering)."""


class PoolClient(Protocol):
    def call(self, pool: str, method: Method, payload: dict[str, Any]) -> AsyncIterator[Reply]:
        """Send an OpenAI-format request body to `pool` and yield its replies."""
        ...


class EnginePoolClient:
    """Calls engines held in this process (anything with LLMEngine's chat/completions), keyed
    by pool name: single-process serving for benchmarks and the HTTP layer's tests. The fleet
    uses ServePoolClient."""

    def __init__(self, engines: Mapping[str, Any]) -> None:
        self._engines = dict(engines)

    async def call(
        self, pool: str, method: Method, payload: dict[str, Any]
    ) -> AsyncIterator[Reply]:
        call = pool_call(method, payload, inject_headers())
        try:
            request = engine_request(call)
        except ValidationError as exc:
            yield invalid_request(exc)
            return
        items = getattr(self._engines[pool], method)(request, raw_request_info(call.headers))
        try:
            async for item in items:
                for reply in replies(item):
                    yield reply
        finally:
            # A caller that stops reading (one JSON reply, a client gone mid-stream) ends the
            # engine's generation now, not whenever the generator is garbage-collected.
            await items.aclose()


@dataclass(frozen=True)
class HttpPool:
    """A pool served by an OpenAI-compatible HTTP server (standalone `vllm serve`, another
    gateway): its base URL and the model id that server serves."""

    url: str
    served_model: str


class HttpPoolClient:
    """Calls pools over HTTP (aiohttp: its C parser keeps the gateway's CPU per request low).
    Whole replies pass through as bytes; streams event by event, re-assembled on blank lines,
    so a client sees each token when the server sends it."""

    def __init__(self, pools: Mapping[str, HttpPool], *, timeout_s: float = 600.0) -> None:
        self._pools = dict(pools)
        self._timeout_s = timeout_s
        self._session: Any = None  # created on first use, inside the serving event loop

    def _client(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s, sock_connect=5),
                connector=aiohttp.TCPConnector(limit=1024),
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self, pool: str, method: Method, payload: dict[str, Any]
    ) -> AsyncIterator[Reply]:
        import aiohttp

        target = self._pools[pool]
        path = _HTTP_PATHS[method]
        body = json.dumps({**payload, "model": target.served_model}).encode()
        started = False
        try:
            headers = {"content-type": "application/json", **inject_headers()}
            async with self._client().post(
                target.url + path, data=body, headers=headers
            ) as response:
                if response.status != 200:
                    error = _http_error(response.status, await response.read())
                    yield _no_tokenize(pool, error) if method == "tokenize" else error
                    return
                if not payload.get("stream"):
                    started = True
                    yield JsonReply(await response.read())
                    return
                event: list[str] = []
                async for raw_line in response.content:
                    line = raw_line.decode().rstrip("\r\n")
                    if line:
                        event.append(line)
                    elif event:
                        started = True
                        yield SseReply("\n".join(event) + "\n\n")
                        event = []
                if event:
                    yield SseReply("\n".join(event) + "\n\n")
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            if started:
                raise
            raise PoolUnavailable(f"pool {pool}: {type(exc).__name__}") from exc


def _http_error(status: int, raw: bytes) -> EngineError:
    try:
        error = json.loads(raw).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    message = error.get("message") if isinstance(error, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    text = str(message or raw[:200].decode(errors="replace"))
    return EngineError(status, text, str(kind), param_of(param))


def _no_tokenize(pool: str, error: EngineError) -> EngineError:
    """A tokenize call's error, with a missing route said plainly. A server without vLLM's
    `/tokenize` (another gateway used as a pool, most OpenAI-compatible servers) answers its
    framework's 404 "Not Found" (or 405): passed on, a client's SDK would read "not found" as
    an unknown model. A 400, like a pool that cannot take a request's media: retrying cannot
    help. vLLM's own 404 for an unknown model names the model and passes through."""
    said = error.message.lower()
    if error.status not in (404, 405) or not ("not found" in said or "not allowed" in said):
        return error
    return EngineError(
        400,
        f"pool {pool} cannot count tokens: its server has no /tokenize (vLLM's token "
        "counting route; e.g. another gateway used as a pool)",
        "invalid_request_error",
    )


def opening_error(reply: SseReply) -> EngineError | None:
    """The engine's error when a stream opens with one, else None. vLLM checks some fields
    only once generation has started (SamplingParams.verify in its engine: logit_bias ids
    outside the vocabulary, among others), and a stream has begun by then, so it refuses them
    in an error event. Nothing has reached the client yet: read here, it is answered with its
    status and field, as the same request unstreamed is."""
    for line in reply.text.splitlines():
        if not line.startswith("data: "):
            continue
        try:
            body = json.loads(line[len("data: ") :])
        except ValueError:
            return None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return None
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else 502
        message = str(error.get("message") or "the engine refused the request")
        return EngineError(status, message, str(error.get("type")), param_of(error.get("param")))
    return None


class ServePoolClient:
    """Calls pool deployments through Ray Serve handles (streaming handles, so the first
    token reaches the client as soon as the engine makes it)."""

    def __init__(self, handles: Mapping[str, Any]) -> None:
        self._handles = {name: handle.options(stream=True) for name, handle in handles.items()}

    async def call(
        self, pool: str, method: Method, payload: dict[str, Any]
    ) -> AsyncIterator[Reply]:
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        call = pool_call(method, payload, inject_headers())
        response = self._handles[pool].answer.remote(call)
        started = finished = False
        try:
            async for batch in response:
                started = True
                for reply in batch:
                    yield reply
            finished = True
        except (RayActorError, BackPressureError, DeploymentUnavailableError) as exc:
            if started:
                raise
            raise PoolUnavailable(f"pool {pool}: {type(exc).__name__}") from exc
        finally:
            if not finished:
                # The client hung up (or we stopped reading): the replica stops generating
                # and frees the sequence's KV blocks instead of finishing for nobody.
                response.cancel()
