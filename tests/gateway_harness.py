"""A gateway on a loopback port with simulated pools in its own process (no Ray): the HTTP
layer as a client sees it, driven by real SDKs. The same app runs inside Ray Serve in the fleet.
Used by the gateway, teams and telemetry suites."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import uvicorn

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.engine import (
    SimulatorEngine,
    simulator_llm_config,
)
from gemma_fleet.gateway.app import create_app
from gemma_fleet.gateway.auth import TeamGate, open_gate
from gemma_fleet.gateway.pool_client import EnginePoolClient
from gemma_fleet.gateway.service import Gateway, GatewaySettings, PoolInfo
from gemma_fleet.teams.settings import TeamsSettings
from gemma_fleet.vram import text_params

CATALOG = load_catalog()
PDF_PAGES = "gemma_fleet_gateway_document_pages_total"
SPEEDUP = 500.0

POOLS = {
    "e2b": SimulatorConfig(model="gemma-4-E2B", gpu="L4", max_model_len=32_768, speedup=SPEEDUP),
    "e4b": SimulatorConfig(
        model="gemma-4-E4B", gpu="A100-80GB", max_model_len=131_072, speedup=SPEEDUP
    ),
    "moe": SimulatorConfig(
        model="gemma-4-26B-A4B", gpu="H100-80GB", max_model_len=262_144, speedup=SPEEDUP
    ),
    # real time (speedup 1): long enough to hang up in the middle of a stream
    "slow": SimulatorConfig(model="gemma-4-E2B", gpu="L4", max_model_len=8192, speedup=1.0),
    "dense": SimulatorConfig(
        model="gemma-4-31B", gpu="H100-80GB", tp=2, max_model_len=32_768, text_only=True,
        speedup=SPEEDUP,
    ),
}  # fmt: skip


def pool_info(name: str, config: SimulatorConfig) -> PoolInfo:
    spec = CATALOG.model(config.model)
    modalities = ["text"] if config.text_only else [m.value for m in spec.modalities]
    return PoolInfo.model_validate(
        {
            "name": name,
            "model": config.model,
            "max_model_len": config.max_model_len,
            "modalities": modalities,
            "capacity": config.max_num_seqs,
            "size_rank": text_params(spec, CATALOG.family.vocab_size),
        }
    )


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    client: Any  # the pool client, for tests that look at the engines behind it
    gate: TeamGate | None = None

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, **kwargs)

    def pdf_pages_read(self) -> float:
        """PDF pages this gateway has read so far (not those its page cache answered)."""
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(PDF_PAGES + "{") and 'source="read"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def within_one_minute(seconds_needed: float = 10) -> None:
    """Wait for the next minute window if this one ends before the test would: limits count
    per minute, so a test whose requests straddle two minutes sees two windows."""
    if time.time() % 60 > 60 - seconds_needed:
        time.sleep(61 - time.time() % 60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_gateway(
    settings: GatewaySettings,
    make_client: Callable[[], Awaitable[tuple[Any, Callable[[], Awaitable[None]]]]],
    make_gate: Callable[[], TeamGate] | None = None,
) -> Iterator[RunningGateway]:
    """Run the gateway app under uvicorn on a free loopback port, in a thread with its own
    event loop; `make_client` builds the pool client inside that loop and returns it with its
    async clean-up; `make_gate` (default: open, no team keys) builds the team gate there."""
    port = _free_port()
    holder: dict[str, Any] = {}
    ready = threading.Event()

    async def main() -> None:
        client, close = await make_client()
        gateway = Gateway(settings, client, CATALOG.family)
        gate = make_gate() if make_gate is not None else None
        app = create_app(gateway, gate)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        holder.update(server=server, gateway=gateway, client=client, gate=gate)
        ready.set()
        await server.serve()
        await close()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(60)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield RunningGateway(
            url=url, gateway=holder["gateway"], client=holder["client"], gate=holder["gate"]
        )
    finally:
        holder["server"].should_exit = True
        thread.join(30)


@contextmanager
def serve_with_metrics_token(
    token: str | None = None, *, token_file: Path | None = None
) -> Iterator[RunningGateway]:
    """An open API (no team keys) whose /metrics needs `token`, or the token in `token_file`
    (followed while it runs): the gate built from the environment a Ray Serve replica reads
    (GEMMA_FLEET_METRICS_TOKEN, or GEMMA_FLEET_METRICS_TOKEN_FILE as the Helm chart sets)."""
    env = {"GEMMA_FLEET_AUTH": "disabled"}
    if token is not None:
        env["GEMMA_FLEET_METRICS_TOKEN"] = token
    if token_file is not None:
        env["GEMMA_FLEET_METRICS_TOKEN_FILE"] = str(token_file)
    settings = TeamsSettings.from_env(env)
    with serve_gateway(fleet_settings(), simulated_pools, lambda: open_gate(settings)) as gw:
        yield gw


async def simulated_pools() -> tuple[Any, Callable[[], Awaitable[None]]]:
    engines = {n: SimulatorEngine(simulator_llm_config(n, c)) for n, c in POOLS.items()}
    for engine in engines.values():
        await engine.start()

    async def close() -> None:
        for engine in engines.values():
            await engine.shutdown()

    return EnginePoolClient(engines), close


def fleet_settings(**overrides: Any) -> GatewaySettings:
    defaults: dict[str, Any] = {
        "pools": [pool_info(n, c) for n, c in POOLS.items()],
        "aliases": {"gemma-4": [p for p in POOLS if p != "slow"]},
        "max_body_bytes": 2 * 2**20,
    }
    return GatewaySettings(**{**defaults, **overrides})


def anthropic_error_body(err: anthropic.APIStatusError) -> dict[str, Any]:
    """An Anthropic SDK error's JSON body. The SDK types it as object; the gateway always
    answers a JSON object."""
    assert isinstance(err.body, dict)
    return err.body
