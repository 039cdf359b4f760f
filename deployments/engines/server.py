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
from ray._common.usage.usage_lib import usage_stats_enabled
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
    async def _start_engine(self) -> None:
        """Start the engine. LLMServer also pushes Ray Serve LLM's usage telemetry here, which
        starts a detached TelemetryAgent actor on the head node: a Python worker of about
        385 MB (benchmarks/soak) whose tags nobody reads when Ray's usage stats are off, as
        the local fleet and the chart set them. Only then is it skipped; Ray's whole start
        runs otherwise (tests/fleet/test_pool_server.py pins the method this replaces)."""
        if usage_stats_enabled():
            await super()._start_engine()  # type: ignore[no-untyped-call]  # Ray: unannotated
            return
        if self.engine is None:
            raise ValueError("Engine is not set")
        await self.engine.start()  # type: ignore[no-untyped-call]  # Ray: unannotated

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
