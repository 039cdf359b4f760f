"""A real redis-server per module (tests/redis_server.py), and a gateway with team keys
required in front of simulated pools, using it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_harness import RunningGateway, fleet_settings, serve_gateway, simulated_pools
from redis_server import RedisServer

from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.teams.settings import TeamsSettings

ADMIN = "admin-" + "x" * 40


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[RunningGateway]:
    settings = TeamsSettings(auth_required=True, redis_url=redis_server.url, admin_key=ADMIN)
    with serve_gateway(fleet_settings(), simulated_pools, lambda: open_gate(settings)) as running:
        yield running


def admin(gw: RunningGateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, gw.url + path, headers=headers, timeout=30, **kwargs)
