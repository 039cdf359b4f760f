"""The server of every pool replica: Ray Serve LLM's LLMServer (which owns the engine, vLLM or
the simulator) plus `answer`, the method the gateway calls with plain data (engines.wire), so
that vLLM's classes are built and read only here, where vLLM is loaded anyway.

The pools' LLMConfigs name this class as their `server_cls`, so every builder of a pool
deployment (the fleet's, Ray Serve LLM's own OpenAI app) serves it; LLMServer's methods stay as
they are for callers that hold vLLM's request objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from ray.llm._internal.serve.core.server.llm_server import LLMServer

from gemma_fleet.deployments.engines.wire import (
    PoolCall,
    Reply,
    engine_request,
    invalid_request,
    raw_request_info,
    replies,
)


class PoolServer(LLMServer):
    async def answer(self, call: PoolCall) -> AsyncIterator[list[Reply]]:
        """Run `call` on the engine and yield its output as replies, a batch at a time (a
        stream's events arrive in LLMServer's batches: one Ray message each)."""
        try:
            request = engine_request(call)
        except ValidationError as exc:
            yield [invalid_request(exc)]
            return
        method: Any = getattr(self, call.method)
        stream = await method(request, raw_request_info(call.headers))
        try:
            async for item in stream:
                yield replies(item)
        finally:
            # A caller that stops reading (or is cancelled) ends the engine's generation now.
            await stream.aclose()
