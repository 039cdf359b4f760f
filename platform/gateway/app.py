"""The gateway's HTTP surface (FastAPI): every API call is authenticated, its body read and
parsed under a size limit (so every malformed request gets a 4xx naming the problem before
anything is routed), served, then settled with the team's store and counted in the metrics
however it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from gemma_fleet.gateway.accounting import StreamTally, Usage
from gemma_fleet.gateway.admin import admin_router
from gemma_fleet.gateway.answer_headers import AnswerHeaders
from gemma_fleet.gateway.anthropic import (
    parse_messages,
    to_chat_request,
    to_count_request,
    to_message,
    to_message_stream,
)
from gemma_fleet.gateway.anthropic_model_list import model_info, model_page, wants_anthropic
from gemma_fleet.gateway.anthropic_models import CountTokensRequest
from gemma_fleet.gateway.auth import Admitted, TeamGate, success_headers
from gemma_fleet.gateway.bodies import parse, read_json
from gemma_fleet.gateway.errors import ApiError
from gemma_fleet.gateway.openai_models import ChatCompletionRequest, CompletionRequest
from gemma_fleet.gateway.openapi import error_response, gateway_openapi
from gemma_fleet.gateway.ratelimit_headers import ratelimit_headers
from gemma_fleet.gateway.request_ids import request_id, request_id_headers
from gemma_fleet.gateway.responses import to_chat_request as responses_to_chat
from gemma_fleet.gateway.responses import to_count_request as responses_to_count
from gemma_fleet.gateway.responses import to_response, to_response_stream
from gemma_fleet.gateway.responses_models import NO_STATE, InputTokensRequest, ResponsesRequest
from gemma_fleet.gateway.service import (
    POOL_HEADER,
    REASON_HEADER,
    Answer,
    Caller,
    Gateway,
    JsonAnswer,
    StreamAnswer,
)
from gemma_fleet.teams.usage import UsageDelta
from gemma_fleet.telemetry import SpanKind, current, end_span, end_with, names, span, start_span

# On every answer, errors included: the API serves JSON and event streams to programs, never
# pages to browsers, so nothing may be sniffed, framed, cached, or load anything.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


# Routes under this prefix speak Anthropic's API, errors included.
ANTHROPIC_PREFIX = "/v1/messages"


def speaks_anthropic(request: Request) -> bool:
    """Whether the answer is for an Anthropic client: its routes, and the model listing when
    an Anthropic SDK asks (it sends anthropic-version)."""
    path = request.url.path
    return path.startswith(ANTHROPIC_PREFIX) or (
        path.startswith("/v1/models") and wants_anthropic(request.headers)
    )


async def refuse(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer `error` from an ASGI middleware, outside the app's handlers: in Anthropic's
    shape on its routes, with the security headers."""
    anthropic = scope["path"].startswith(ANTHROPIC_PREFIX)
    body = error.anthropic_body() if anthropic else error.openai_body()
    headers = {**SECURITY_HEADERS, **error.headers()}
    await JSONResponse(body, status_code=error.status, headers=headers)(scope, receive, send)


# A handler parses the body, serves it for `Caller`, and says which model was asked for and
# whether the client wants the usage chunk of a stream.
Handler = Callable[[dict[str, Any], Caller], Awaitable[tuple[str, bool, Answer]]]


def rejection_reason(exc: ApiError) -> str:
    """A bounded label for why a request was refused."""
    if exc.status == 429:
        return "budget" if exc.code == "insufficient_quota" else "rate_limit"
    return {401: "auth", 403: "forbidden", 404: "not_found", 503: "unavailable"}.get(
        exc.status, "bad_request" if exc.status < 500 else "engine"
    )


def event_stream(events: AsyncIterator[str], headers: dict[str, str]) -> StreamingResponse:
    """A server-sent event stream. `x-accel-buffering: no` asks an nginx in front (ingress-nginx,
    most often) to pass each event on as it comes: by default nginx buffers a proxied answer,
    and tokens would reach the client in bursts, or only at the end."""
    headers = {**headers, "x-accel-buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def respond(answer: Answer) -> Response:
    headers = {**SECURITY_HEADERS, **answer.headers}
    if isinstance(answer, JsonAnswer):
        return Response(answer.reply.raw, media_type="application/json", headers=headers)
    return event_stream(answer.events, headers)


# What an SDK calling an API route the fleet lacks is told it does serve.
SERVED_APIS = (
    "this gateway serves /v1/chat/completions, /v1/completions, /v1/responses, /v1/messages "
    "(and their token counting), /v1/models and /v1/usage"
)


def _methods(app: FastAPI, path: str) -> set[str]:
    """The methods `app` serves `path` with, across all its routes (Starlette's 405 names
    those of the first route matching the path only)."""
    routes = (r for r in app.routes if isinstance(r, APIRoute) and r.path_regex.match(path))
    return {method for route in routes for method in route.methods}


def _served_without_slash(app: FastAPI, path: str) -> str | None:
    """`path` without its trailing slashes when the app serves that path; else None."""
    stripped = path.rstrip("/")
    return stripped if stripped and stripped != path and _methods(app, stripped) else None


def create_app(gateway: Gateway, gate: TeamGate | None = None) -> FastAPI:
    """The OpenAI- and Anthropic-compatible HTTP app over `gateway`; `gate` (None: open, no
    team keys) authenticates callers and holds them to their team's limits."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    # No redirect for a path with a trailing slash: Starlette's 307 names the host and scheme
    # the gateway sees, which behind a TLS-terminating proxy is http://, and a client that
    # follows it sends its prompt (and, same host, its key) again unencrypted. It gets a 404
    # saying which path to call instead (_http_error).
    app = FastAPI(
        title="Gemma Fleet gateway",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    gate = gate or TeamGate(None)
    app.openapi = gateway_openapi(app, gate.metrics_protected)  # type: ignore[method-assign]
    app.add_middleware(AnswerHeaders, headers_for=lambda _: SECURITY_HEADERS)
    app.add_middleware(AnswerHeaders, headers_for=request_id_headers)
    limit = gateway.settings.max_body_bytes
    read_timeout = gateway.settings.body_timeout_s
    metrics = gateway.metrics
    pool_models = {p.name: p.model for p in gateway.settings.pools}
    settling: set[asyncio.Task[None]] = set()

    async def settle(admitted: list[Admitted], pool: str | None, usage: Usage | None) -> None:
        """Release the admission and meter the usage (nothing used: a refused request)."""
        if gate.access is None or not admitted:
            return
        entry = admitted[0]
        delta = UsageDelta(requests=0)
        if usage is not None:
            delta = UsageDelta(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                images=entry.classified.images,
                audio_seconds=entry.classified.audio_seconds,
            )
        model = pool_models.get(pool or "", "")
        await gate.access.settle(entry.ticket, model, delta)
        metrics.store_pending.set(gate.access.pending)

    def settle_later(admitted: list[Admitted], pool: str | None, usage: Usage | None) -> None:
        """Settle from a stream's end, which may be a cancelled task (the client left): the
        accounting runs as its own task so the cancellation cannot cut it short."""
        task = asyncio.get_running_loop().create_task(settle(admitted, pool, usage))
        settling.add(task)
        task.add_done_callback(settling.discard)

    async def metered(
        events: AsyncIterator[str],
        endpoint: str,
        team: str,
        model: str,
        pool: str,
        reason: str,
        started: float,
        tally: StreamTally,
        admitted: list[Admitted],
        sequences: int = 1,
    ) -> AsyncIterator[str]:
        """Pass a stream through: time to first token, time per output token, end to end,
        tokens, and the team's settlement when it ends for whatever reason."""
        first_at: float | None = None
        try:
            async for event in events:
                out = tally.see(event)
                # The first token is the first event that carries generated text, thinking or
                # a tool call: an engine may open the stream with an empty role chunk first.
                if first_at is None and tally.text_events:
                    first_at = time.perf_counter()
                    metrics.first_token(pool, started)
                if out:
                    yield out
        finally:
            prompt = admitted[0].classified.needs.input_tokens if admitted else 0
            usage = tally.usage(prompt)
            metrics.answered(endpoint, team, model, pool, reason, started)
            metrics.served_tokens(team, pool_models.get(pool, ""), *_counts(usage))
            if first_at is not None:
                # n choices decode side by side: each made its share of the tokens.
                per_sequence = usage.completion_tokens // sequences
                metrics.per_output_token(pool, first_at, per_sequence)
            settle_later(admitted, pool, usage)

    async def observed(endpoint: str, request: Request, handle: Handler) -> Answer:
        """Run one API call: authenticate, parse, serve, settle, count."""
        started = time.perf_counter()
        attributes = {names.HTTP_ROUTE: request.url.path, names.REQUEST_ID: request_id(request)}
        root = start_span(names.REQUEST, kind=SpanKind.SERVER, attributes=attributes)
        admitted: list[Admitted] = []
        team = ""
        try:
            with current(root):
                with span(names.AUTH):
                    identity = await gate.identify(request)
                team = identity.team.name if identity is not None else ""
                root.set_attribute(names.TEAM, team)
                raw = await read_json(request, limit, read_timeout)
                caller = gate.caller(identity, admitted)
                model, wants_usage, answer = await handle(raw, caller)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                settle_later(admitted, None, None)
            else:
                await settle(admitted, None, None)
            end_span(root, exc)
            if isinstance(exc, ApiError):
                metrics.refused(endpoint, team, exc.status, rejection_reason(exc))
            raise
        root.set_attribute(names.REQUEST_MODEL, model)
        answer.headers.update(success_headers(admitted, anthropic=speaks_anthropic(request)))
        pool, reason = answer.headers[POOL_HEADER], answer.headers[REASON_HEADER]
        if isinstance(answer, StreamAnswer):
            tally = StreamTally(client_wants_usage=wants_usage)
            events = metered(
                answer.events,
                endpoint,
                team,
                model,
                pool,
                reason,
                started,
                tally,
                admitted,
                answer.sequences,
            )
            answer.events = end_with(root, events)
            return answer
        usage = answer.usage or Usage(0, 0)
        metrics.answered(endpoint, team, model, pool, reason, started)
        metrics.served_tokens(team, pool_models.get(pool, ""), *_counts(usage))
        await settle(admitted, pool, usage)
        end_span(root)
        return answer

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        # Anthropic's clients read Anthropic's error shape and headers; everyone else OpenAI's.
        anthropic = speaks_anthropic(request)
        body = exc.anthropic_body() if anthropic else exc.openai_body()
        limits = ratelimit_headers(exc.window, anthropic=anthropic)
        headers = {**SECURITY_HEADERS, **exc.headers(), **limits}
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        # Starlette's own refusals (no such route, method not allowed) in the API's shape.
        if exc.status_code < 400:
            return Response(status_code=exc.status_code, headers=exc.headers)
        message = str(exc.detail)
        path = request.url.path
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and (served := _served_without_slash(app, path)):
            message = (
                f"{request.method} {path} is not served here: drop the trailing slash "
                f"({request.method} {served})"
            )
        elif exc.status_code == 404 and path.startswith("/v1/"):
            # An OpenAI or Anthropic SDK calling an API the fleet does not serve (embeddings,
            # audio, images, files, batches...): say which it does, not just "Not Found".
            message = f"{request.method} {path} is not served here; {SERVED_APIS}"
        elif exc.status_code == 405:
            # E.g. the SDK's chat.completions.list() (stored completions) or
            # responses.compact(), whose path another route takes with another method.
            allowed = ", ".join(sorted(_methods(app, path)))
            headers["Allow"] = allowed
            message = f"{request.method} {path} is not served here: this path takes {allowed}"
            if path.startswith("/v1/"):
                message += f"; {SERVED_APIS}"
        return await _api_error(request, ApiError(exc.status_code, message, extra_headers=headers))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: the client gets a JSON 500 without a traceback (the server's
        # log has it); Starlette sends this from outside the middleware, hence the headers.
        return await _api_error(request, ApiError(500, f"internal error ({type(exc).__name__})"))

    async def _chat(raw: dict[str, Any], caller: Caller) -> tuple[str, bool, Answer]:
        body = parse(ChatCompletionRequest, raw)
        wants = body.stream_options is not None and body.stream_options.include_usage
        return body.model, wants, await gateway.chat(body, caller)

    async def _completions(raw: dict[str, Any], caller: Caller) -> tuple[str, bool, Answer]:
        body = parse(CompletionRequest, raw)
        wants = body.stream_options is not None and body.stream_options.include_usage
        return body.model, wants, await gateway.completions(body, caller)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return respond(await observed("chat", request, _chat))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return respond(await observed("completions", request, _completions))

    async def translated(
        endpoint: str,
        request: Request,
        parse_body: Callable[[dict[str, Any]], Any],
        to_chat: Callable[[Any], ChatCompletionRequest],
        shape: Callable[[Any, str, dict[str, Any]], dict[str, Any]],
        shape_stream: Callable[[Any, str, AsyncIterator[str]], AsyncIterator[str]],
    ) -> Response:
        """An API translated onto chat (Anthropic Messages, OpenAI Responses): the body is
        parsed, then routed, limited and metered as the chat request `to_chat` makes of it,
        and the answer (or stream) shaped back. The model an answer names is the pool that
        served it, as the OpenAI answers name it (and as Anthropic names the dated model
        behind an alias)."""
        parsed: list[Any] = []

        async def handle(raw: dict[str, Any], caller: Caller) -> tuple[str, bool, Answer]:
            body = parse_body(raw)
            parsed.append(body)
            # Both APIs' closing events carry the usage.
            return body.model, True, await gateway.chat(to_chat(body), caller)

        answer = await observed(endpoint, request, handle)
        headers = {**SECURITY_HEADERS, **answer.headers}
        body = parsed[0]
        model = answer.headers.get(POOL_HEADER, body.model)
        if isinstance(answer, JsonAnswer):
            return JSONResponse(shape(body, model, answer.body), headers=headers)
        return event_stream(shape_stream(body, model, answer.events), headers)

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        # Errors are answered in Anthropic's shape by the handlers above (ANTHROPIC_PREFIX).
        return await translated(
            "messages",
            request,
            parse_messages,
            to_chat_request,
            lambda _, model, chat: to_message(chat, model),
            lambda _, model, events: to_message_stream(events, model),
        )

    @app.post("/v1/responses")
    async def responses(request: Request) -> Response:
        return await translated(
            "responses",
            request,
            lambda raw: parse(ResponsesRequest, raw),
            responses_to_chat,
            lambda body, model, chat: to_response(chat, body, model),
            lambda body, model, events: to_response_stream(events, body, model),
        )

    @app.get("/v1/responses/{response_id}", responses={404: error_response("never stored")})
    @app.delete("/v1/responses/{response_id}", responses={404: error_response("never stored")})
    async def stored_response(response_id: str) -> Response:
        # The SDK's retrieve() and delete(), what a client that sent store: true may try next.
        raise ApiError(404, f"no response {response_id!r}: {NO_STATE}", param="response_id")

    async def counted(
        endpoint: str,
        request: Request,
        parse_body: Callable[[dict[str, Any]], Any],
        to_count: Callable[[Any], ChatCompletionRequest],
    ) -> int:
        """The prompt tokens of a request, counted by the engine that would serve it
        (Anthropic's count_tokens, OpenAI's responses.input_tokens). Authenticated and held to
        the team's models like a generation, but not admitted: counting generates nothing, so
        it spends none of the team's requests or tokens. It has a requests-per-minute counter
        of its own (docs/teams.md)."""
        team = ""
        try:
            identity = await gate.identify(request)
            team = identity.team.name if identity is not None else ""
            body = parse_body(await read_json(request, limit, read_timeout))
            await gate.admit_count(identity)
            count = await gateway.count_tokens(to_count(body), gate.caller(identity, []))
        except ApiError as exc:
            metrics.refused(endpoint, team, exc.status, rejection_reason(exc))
            raise
        metrics.requests.labels(endpoint, team, body.model, "", "200").inc()
        return count

    @app.post("/v1/messages/count_tokens")
    async def count_tokens(request: Request) -> JSONResponse:
        # Errors in Anthropic's shape (ANTHROPIC_PREFIX).
        count = await counted(
            "count_tokens", request, lambda raw: parse(CountTokensRequest, raw), to_count_request
        )
        return JSONResponse({"input_tokens": count}, headers=SECURITY_HEADERS)

    @app.post("/v1/responses/input_tokens")
    async def input_tokens(request: Request) -> JSONResponse:
        count = await counted(
            "input_tokens",
            request,
            lambda raw: parse(InputTokensRequest, raw),
            responses_to_count,
        )
        body = {"object": "response.input_tokens", "input_tokens": count}
        return JSONResponse(body, headers=SECURITY_HEADERS)

    app.include_router(admin_router(gate, read_timeout, gateway.settings.served_names()))

    # Open routes: without a key they list every pool and alias; with a team's key, what the
    # team may call, as OpenAI lists the models a key can use. Anthropic's SDKs (which send
    # anthropic-version) get Anthropic's shapes at the same URLs.
    bad_key = error_response("a team key was sent and is not valid (no key: the whole list)")

    @app.get("/v1/models", responses={401: bad_key})
    async def models(request: Request) -> JSONResponse:
        allowed = await gate.listing_scope(request)
        cards: dict[str, Any] = gateway.models(allowed)
        if wants_anthropic(request.headers):
            query = request.query_params
            cards = model_page(
                cards["data"], query.get("limit"), query.get("after_id"), query.get("before_id")
            )
        return JSONResponse(cards, headers=SECURITY_HEADERS)

    @app.get(
        "/v1/models/{model_id:path}",
        responses={401: bad_key, 404: error_response("no such model (for the key's team)")},
    )
    async def model(model_id: str, request: Request) -> JSONResponse:
        if not model_id:  # "/v1/models/": the list, asked for with a trailing slash
            raise HTTPException(404)
        allowed = await gate.listing_scope(request)
        card = gateway.model(model_id, allowed)
        if wants_anthropic(request.headers):
            card = model_info(card)
        return JSONResponse(card, headers=SECURITY_HEADERS)

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus(request: Request) -> Response:
        # Per-team counters: with GEMMA_FLEET_METRICS_TOKEN set, only its holder reads them
        # (port 8000 may face the internet through a LoadBalancer Service).
        await gate.require_metrics(request)
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


def _counts(usage: Usage) -> tuple[int, int]:
    return usage.prompt_tokens, usage.completion_tokens
