"""The gateway's pool-health watcher, in one process and in fast time: a pool whose replica
count reads 0 is routed around at once, a request waiting for such a pool's first reply is cut
loose and routed again (not left waiting as Ray Serve would leave it), a pinned request gets 503
with Retry-After, and the pool is used again as soon as a replica runs. The pools here are fakes
that, like a Serve handle to a deployment with no replica, never answer while "down"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gateway_harness import CATALOG, fleet_settings

from gemma_fleet.gateway.errors import ApiError
from gemma_fleet.gateway.openai_models import ChatCompletionRequest
from gemma_fleet.gateway.pool_client import JsonReply, Method, Reply
from gemma_fleet.gateway.service import Gateway, JsonAnswer

BOUND_S = 3.0  # every request here must be answered within this (the watcher reads every 0.05 s)


class FakePools:
    """Answers at once from a pool with replicas; a pool with none never answers (the
    request waits, as in Ray Serve's queue), until cancelled."""

    def __init__(self) -> None:
        self.live: dict[str, int | None] = {}
        self.hang: set[str] = set()  # pools that never answer, whatever their count says
        self.waiting = 0

    def counts(self) -> dict[str, int | None]:
        return dict(self.live)

    async def call(
        self, pool: str, method: Method, payload: dict[str, Any]
    ) -> AsyncIterator[Reply]:
        if self.live.get(pool) == 0 or pool in self.hang:
            self.waiting += 1
            try:
                await asyncio.Event().wait()
            finally:
                self.waiting -= 1
        yield JsonReply(b'{"id": "x", "choices": [], "pool": "%s"}' % pool.encode())


def chat(model: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    )


async def ask(gateway: Gateway, model: str) -> JsonAnswer:
    async with asyncio.timeout(BOUND_S):
        answer = await gateway.chat(chat(model))
    assert isinstance(answer, JsonAnswer)
    return answer


def gateway_with(pools: FakePools, every_s: float = 0.05) -> Gateway:
    settings = fleet_settings()
    return Gateway(
        settings, pools, CATALOG.family, live_replicas=pools.counts, watch_interval_s=every_s
    )


def test_a_pool_without_replicas_is_routed_around_and_used_again_once_back() -> None:
    async def scenario() -> None:
        pools = FakePools()
        gateway = gateway_with(pools)
        assert (await ask(gateway, "gemma-4")).headers["x-gemma-fleet-pool"] == "e2b"
        pools.live["e2b"] = 0
        await asyncio.sleep(0.2)  # the watcher has read it
        assert (await ask(gateway, "gemma-4")).headers["x-gemma-fleet-pool"] == "e4b"
        with pytest.raises(ApiError) as refused:
            await ask(gateway, "e2b")
        assert refused.value.status == 503 and refused.value.retry_after_s
        assert "e2b" in refused.value.message
        pools.live["e2b"] = 2
        await asyncio.sleep(0.2)
        assert (await ask(gateway, "gemma-4")).headers["x-gemma-fleet-pool"] == "e2b"
        outages = gateway.metrics.registry.get_sample_value(
            "gemma_fleet_gateway_pool_outages_total", {"pool": "e2b"}
        )
        assert outages == 1

    asyncio.run(scenario())


def test_a_request_waiting_on_a_pool_that_loses_its_last_replica_is_routed_again() -> None:
    async def scenario() -> None:
        pools = FakePools()
        # The replicas go away between the watcher's reads (every 0.5 s here): the requests
        # are already sent (in Serve's queue) when the count drops to 0.
        gateway = gateway_with(pools, every_s=0.5)
        await ask(gateway, "gemma-4")  # starts the watcher
        await asyncio.sleep(0.6)
        pools.live["e2b"] = 0
        pinned = asyncio.create_task(ask(gateway, "e2b"))
        alias = asyncio.create_task(ask(gateway, "gemma-4"))
        await asyncio.sleep(0.05)
        assert pools.waiting == 2  # both wait on e2b, as they would in Ray Serve
        rerouted = await alias
        assert rerouted.headers["x-gemma-fleet-pool"] == "e4b"
        with pytest.raises(ApiError) as refused:
            await pinned
        assert refused.value.status == 503 and refused.value.retry_after_s
        assert pools.waiting == 0  # the waiting calls were cancelled, not leaked

    asyncio.run(scenario())


def test_a_client_that_leaves_is_still_cancelled() -> None:
    """The watcher's cancellation is told apart from a client's: a request cancelled by its
    client stays cancelled (no rerouting for nobody)."""

    async def scenario() -> None:
        pools = FakePools()
        gateway = gateway_with(pools)
        pools.hang.add("e2b")  # its replica count stays unknown: nothing cuts the wait
        request = asyncio.create_task(gateway.chat(chat("e2b")))
        await asyncio.sleep(0.01)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(scenario())
