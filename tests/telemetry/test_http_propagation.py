"""A pool behind an OpenAI-compatible HTTP server (a standalone `vllm serve`) gets the trace
context as a W3C `traceparent` header whose parent is the gateway's dispatch span: what vLLM's
own tracing (`--otlp-traces-endpoint`) continues from."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gemma_fleet.gateway.openai_models import ChatCompletionRequest
from gemma_fleet.gateway.pool_client import HttpPool, HttpPoolClient
from gemma_fleet.gateway.service import Gateway
from gemma_fleet.telemetry import names

from .otlp_receiver import from_sdk
from .simulated_fleet import CATALOG, POOLS, settings

REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "small",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


async def _serve_one_chat(stream: bool) -> list[dict[str, str]]:
    """A one-route OpenAI-compatible server that records each request's headers; the gateway
    sends it one chat request. Returns the recorded headers."""
    received: list[dict[str, str]] = []

    async def chat(request: web.Request) -> web.StreamResponse:
        received.append({k.lower(): v for k, v in request.headers.items()})
        if not (await request.json()).get("stream"):
            return web.json_response(REPLY)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunk = {**REPLY, "object": "chat.completion.chunk", "choices": [], "usage": None}
        await response.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = HttpPoolClient({n: HttpPool(f"http://127.0.0.1:{port}", n) for n in POOLS})
    try:
        gateway = Gateway(settings(), client, CATALOG.family)
        body: dict[str, Any] = {
            "model": "small",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        }
        answer = await gateway.chat(ChatCompletionRequest.model_validate(body))
        events = getattr(answer, "events", None)
        if events is not None:
            async for _ in events:
                pass
    finally:
        await client.aclose()
        await runner.cleanup()
    return received


def test_http_pool_request_carries_the_dispatch_span(spans: InMemorySpanExporter) -> None:
    for stream in (False, True):
        spans.clear()
        [headers] = asyncio.run(_serve_one_chat(stream))
        [dispatch] = [from_sdk(s) for s in spans.get_finished_spans() if s.name == names.DISPATCH]
        version, trace_id, parent_id, flags = headers["traceparent"].split("-")
        assert version == "00" and int(flags, 16) & 1, "not sent as sampled"
        assert (trace_id, parent_id) == (dispatch.trace_id, dispatch.span_id)
