"""The gateway's HTTP surface (FastAPI). Bodies are read and parsed here, under a size limit,
so every malformed request gets a 4xx that names the problem before anything is routed."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from gemma_fleet.gateway.anthropic import to_chat_request, to_message, to_message_stream
from gemma_fleet.gateway.anthropic_models import MessagesRequest
from gemma_fleet.gateway.errors import ApiError, validation_error
from gemma_fleet.gateway.openai_models import ChatCompletionRequest, CompletionRequest
from gemma_fleet.gateway.service import (
    POOL_HEADER,
    REASON_HEADER,
    Answer,
    Gateway,
    JsonAnswer,
    StreamAnswer,
)

M = TypeVar("M", bound=BaseModel)

SECURITY_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-store"}


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object: 415 for another content type, 413 above `limit`
    bytes (checked while reading, so a lying Content-Length does not help), 400 otherwise."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {content_type!r}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared):,} bytes exceeds {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds {limit:,} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except RecursionError as exc:
        raise ApiError(400, "JSON nested too deeply") from exc
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, not {type(body).__name__}")
    return body


def parse(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc, body) from exc


def respond(answer: Answer) -> Response:
    headers = {**SECURITY_HEADERS, **answer.headers}
    if isinstance(answer, JsonAnswer):
        return Response(answer.reply.raw, media_type="application/json", headers=headers)
    return StreamingResponse(answer.events, media_type="text/event-stream", headers=headers)


def create_app(gateway: Gateway) -> FastAPI:
    """The OpenAI-compatible HTTP app over `gateway`."""
    app = FastAPI(title="Gemma Fleet gateway", docs_url=None, redoc_url=None)
    limit = gateway.settings.max_body_bytes
    metrics = gateway.metrics

    async def observed(
        endpoint: str,
        request: Request,
        handle: Callable[[dict[str, Any]], Awaitable[tuple[str, Answer]]],
    ) -> Answer:
        """Run one API call, counting it whichever way it ends. Only model names the gateway
        serves become label values: a client cannot grow the metric set."""
        started = time.perf_counter()
        try:
            model, answer = await handle(await read_json(request, limit))
        except ApiError as exc:
            metrics.refused(endpoint, exc.status)
            raise
        pool, reason = answer.headers[POOL_HEADER], answer.headers[REASON_HEADER]
        if isinstance(answer, StreamAnswer):
            answer.events = metrics.timed_stream(
                answer.events, endpoint, model, pool, reason, started
            )
        else:
            metrics.answered(endpoint, model, pool, reason, started)
        return answer

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {**SECURITY_HEADERS, **exc.headers()}
        return JSONResponse(exc.openai_body(), status_code=exc.status, headers=headers)

    async def _chat(raw: dict[str, Any]) -> tuple[str, Answer]:
        body = parse(ChatCompletionRequest, raw)
        return body.model, await gateway.chat(body)

    async def _completions(raw: dict[str, Any]) -> tuple[str, Answer]:
        body = parse(CompletionRequest, raw)
        return body.model, await gateway.completions(body)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return respond(await observed("chat", request, _chat))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return respond(await observed("completions", request, _completions))

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        # Anthropic clients expect Anthropic's error shape, so errors are answered here.
        parsed: list[MessagesRequest] = []

        async def _messages(raw: dict[str, Any]) -> tuple[str, Answer]:
            body = parse(MessagesRequest, raw)
            parsed.append(body)
            return body.model, await gateway.chat(to_chat_request(body))

        try:
            answer = await observed("messages", request, _messages)
        except ApiError as exc:
            headers = {**SECURITY_HEADERS, **exc.headers()}
            return JSONResponse(exc.anthropic_body(), status_code=exc.status, headers=headers)
        headers = {**SECURITY_HEADERS, **answer.headers}
        model = parsed[0].model
        if isinstance(answer, JsonAnswer):
            return JSONResponse(to_message(answer.body, model), headers=headers)
        return StreamingResponse(
            to_message_stream(answer.events, model),
            media_type="text/event-stream",
            headers=headers,
        )

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse(gateway.models(), headers=SECURITY_HEADERS)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(gateway.metrics_text(), media_type="text/plain; version=0.0.4")

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"}, headers=SECURITY_HEADERS)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if gateway.ready():
            return JSONResponse({"status": "ready"}, headers=SECURITY_HEADERS)
        raise ApiError(503, "no pool has a healthy replica", retry_after_s=5)

    return app
