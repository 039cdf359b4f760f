"""Pools behind OpenAI-compatible HTTP servers: a second gateway whose pools are the first
gateway's, so every reply crosses a real HTTP hop (what a standalone `vllm serve` pool gets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import openai
import pytest
from gateway_harness import POOLS, fleet_settings, serve_gateway

from gemma_fleet.gateway.pool_client import HttpPool, HttpPoolClient


@pytest.fixture(scope="module")
def front(gateway_server: Any) -> Iterator[Any]:
    async def http_pools() -> tuple[Any, Callable[[], Awaitable[None]]]:
        client = HttpPoolClient({n: HttpPool(gateway_server.url, n) for n in POOLS})
        return client, client.aclose

    # The front believes e2b holds 128K tokens; the backend's e2b holds 32K, so requests in
    # between reach the backend and come back refused: a backend error crossing the hop.
    settings = fleet_settings()
    pools = [
        p.model_copy(update={"max_model_len": 131_072}) if p.name == "e2b" else p
        for p in settings.pools
    ]
    with serve_gateway(settings.model_copy(update={"pools": pools}), http_pools) as running:
        yield running


def test_chat_over_http_pools(front: Any) -> None:
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gemma-4", messages=[{"role": "user", "content": "hi"}], max_tokens=6
    )
    assert raw.headers["x-gemma-fleet-pool"] == "e2b"
    assert raw.parse().choices[0].message.content


def test_stream_over_http_pools_ends_once(front: Any) -> None:
    import httpx

    body = {
        "model": "dense",
        "stream": True,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "go"}],
    }
    with httpx.stream("POST", front.url + "/v1/chat/completions", json=body, timeout=30) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert events.count("data: [DONE]") == 1
    assert len(events) > 3


def test_backend_errors_keep_their_status(front: Any) -> None:
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="e2b", prompt="word " * 40_000, max_tokens=10)
    assert "32,768" in err.value.message  # the backend's limit, not the front's


def test_unreachable_pool_is_a_503(gateway_server: Any) -> None:
    import asyncio

    from gemma_fleet.gateway.pool_client import PoolUnavailable

    async def call() -> None:
        client = HttpPoolClient({"e2b": HttpPool("http://127.0.0.1:9", "e2b")})
        try:
            async for _ in client.call("e2b", "chat", {"messages": [], "stream": False}):
                pass
        finally:
            await client.aclose()

    with pytest.raises(PoolUnavailable):
        asyncio.run(call())


@pytest.fixture(scope="module")
def front_with_dead_pool(gateway_server: Any) -> Iterator[Any]:
    async def http_pools() -> tuple[Any, Callable[[], Awaitable[None]]]:
        pools = {n: HttpPool(gateway_server.url, n) for n in POOLS}
        pools["e2b"] = HttpPool("http://127.0.0.1:9", "e2b")  # nothing listens on port 9
        client = HttpPoolClient(pools)
        return client, client.aclose

    with serve_gateway(fleet_settings(), http_pools) as running:
        yield running


def test_unreachable_pool_is_routed_around(front_with_dead_pool: Any) -> None:
    client = openai.OpenAI(base_url=front_with_dead_pool.url + "/v1", api_key="x", max_retries=0)
    for _ in range(3):  # the first discovers e2b is down, the next ones skip it
        raw = client.chat.completions.with_raw_response.create(
            model="gemma-4", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert raw.headers["x-gemma-fleet-pool"] == "e4b"


def test_unreachable_named_pool_is_a_503_with_retry_after(front_with_dead_pool: Any) -> None:
    r = front_with_dead_pool.post(
        "/v1/chat/completions",
        json={"model": "e2b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) > 0
    assert "down" in r.json()["error"]["message"]


def test_backend_errors_keep_the_field_they_name(front: Any) -> None:
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="x", max_retries=0)
    schema = {"type": "object", "properties": {"a": False}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="e2b", messages=[{"role": "user", "content": "hi"}], response_format=fmt
        )  # type: ignore[call-overload]
    assert err.value.param == "response_format.json_schema.schema"  # across the HTTP hop
