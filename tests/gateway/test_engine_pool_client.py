"""What a pool client answers when vLLM's own request model refuses a body the gateway let
through: a 400 naming the field, as the pools' PoolServer answers it (tests/simulator/
test_serve.py), not an exception out of the client (a 500)."""

from __future__ import annotations

import asyncio

from gemma_fleet.gateway.pool_client import EngineError, EnginePoolClient


def test_a_body_vllm_refuses_is_a_400_naming_the_field() -> None:
    body = {"model": "p", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": "many"}

    async def replies() -> list[object]:
        # No engine: the body is refused before one would be called.
        return [reply async for reply in EnginePoolClient({}).call("p", "chat", body)]

    [refused] = asyncio.run(replies())
    assert isinstance(refused, EngineError)
    assert (refused.status, refused.param, refused.type) == (
        400,
        "max_tokens",
        "invalid_request_error",
    )
    assert refused.message.startswith("max_tokens: ")
