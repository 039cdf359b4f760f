"""Anthropic's count_tokens against pools served over HTTP: a server that has no `/tokenize`
(here another gateway used as a pool, as in test_http_pools) cannot count, and the client is
told so plainly rather than handed the server's 404 as if its model were unknown."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam
from gateway_harness import POOLS, anthropic_error_body, fleet_settings, serve_gateway

from gemma_fleet.gateway.pool_client import HttpPool, HttpPoolClient


@pytest.fixture(scope="module")
def front(gateway_server: Any) -> Iterator[Any]:
    async def http_pools() -> tuple[Any, Callable[[], Awaitable[None]]]:
        client = HttpPoolClient({n: HttpPool(gateway_server.url, n) for n in POOLS})
        return client, client.aclose

    with serve_gateway(fleet_settings(), http_pools) as running:
        yield running


def test_count_tokens_on_a_pool_without_tokenize_says_so(front: Any) -> None:
    client = anthropic.Anthropic(base_url=front.url, api_key="x", max_retries=0)
    messages: list[MessageParam] = [{"role": "user", "content": "hello there"}]
    assert client.messages.create(model="e2b", max_tokens=4, messages=messages).content
    for model in ("e2b", "gemma-4"):
        with pytest.raises(anthropic.BadRequestError) as err:
            client.messages.count_tokens(model=model, messages=messages)
        error = anthropic_error_body(err.value)["error"]
        assert error["type"] == "invalid_request_error"
        assert "cannot count tokens" in error["message"] and "/tokenize" in error["message"]
        assert "pool e2b" in error["message"]  # the pool the alias chose, too
