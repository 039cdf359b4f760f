"""Two simulated pools, the gateway settings that describe them, and a gateway over them in
this process (no Ray), shared by this suite's tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
from gateway_harness import CATALOG as CATALOG  # re-exported: the suite's tests use it
from gateway_harness import pool_info

from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.engine import SimulatorEngine, simulator_llm_config
from gemma_fleet.gateway.app import create_app
from gemma_fleet.gateway.pool_client import EnginePoolClient
from gemma_fleet.gateway.service import Gateway, GatewaySettings

POOLS = {
    "small": SimulatorConfig(model="gemma-4-E2B", gpu="L4", max_model_len=8192, speedup=500),
    "big": SimulatorConfig(
        model="gemma-4-31B", gpu="H100-80GB", max_model_len=32_768, text_only=True, speedup=500
    ),
}


def settings(pools: dict[str, SimulatorConfig] = POOLS) -> GatewaySettings:
    return GatewaySettings(
        pools=[pool_info(n, c) for n, c in pools.items()], aliases={"gemma-4": list(pools)}
    )


@dataclass
class Served:
    responses: list[httpx.Response]
    gateway_metrics: str  # the gateway's /metrics afterwards
    engine_metrics: dict[str, str]  # each pool's engine's Prometheus text afterwards


def serve(
    bodies: list[dict[str, Any]],
    *,
    believed_context: dict[str, int] | None = None,
    options: dict[str, Any] | None = None,
) -> Served:
    """POST each chat body in turn to a fresh gateway (its HTTP app over httpx's ASGI
    transport) in front of fresh simulated engines; responses are read whole.
    `believed_context` overrides what the gateway is told of a pool's max_model_len;
    `options` sets gateway options (GatewayOptions fields)."""
    gateway_settings = settings().model_copy(update=options or {})
    if believed_context:
        pools = [
            p.model_copy(update={"max_model_len": believed_context.get(p.name, p.max_model_len)})
            for p in gateway_settings.pools
        ]
        gateway_settings = gateway_settings.model_copy(update={"pools": pools})

    async def main() -> Served:
        engines = {n: SimulatorEngine(simulator_llm_config(n, c)) for n, c in POOLS.items()}
        for engine in engines.values():
            await engine.start()
        try:
            gateway = Gateway(gateway_settings, EnginePoolClient(engines), CATALOG.family)
            transport = httpx.ASGITransport(app=create_app(gateway))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                responses = [await client.post("/v1/chat/completions", json=b) for b in bodies]
                metrics = (await client.get("/metrics")).text
            await gateway.aclose()
        finally:
            for engine in engines.values():
                await engine.shutdown()
        return Served(responses, metrics, {n: e.metrics_text() for n, e in engines.items()})

    return asyncio.run(main())


def post_all(
    bodies: list[dict[str, Any]], *, believed_context: dict[str, int] | None = None
) -> list[httpx.Response]:
    return serve(bodies, believed_context=believed_context).responses
