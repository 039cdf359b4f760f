"""One gateway for the reliability suite, as production runs it: team keys required (a real
redis-server), the admin API on, the production body limit (25 MiB), simulated pools in this
process (tests/gateway_harness.py), and a short body-read time limit so the slow-client test
is quick."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_harness import RunningGateway, fleet_settings, serve_gateway, simulated_pools
from redis_server import RedisServer

from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.teams.settings import TeamsSettings

ADMIN_KEY = "reliability-admin-" + "k" * 32
BODY_LIMIT = 25 * 2**20  # GatewaySettings' default
BODY_TIMEOUT_S = 2.0
CHAT = "/v1/chat/completions"


@dataclass
class Fleet:
    """The running gateway, its Redis, and a team key that may use every model."""

    gw: RunningGateway
    redis: RedisServer
    team: str
    key: str

    @property
    def url(self) -> str:
        return self.gw.url

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {**({"authorization": f"Bearer {key}"} if key else {}), **kw.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def team_call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.call(method, path, self.key, **kw)

    def admin_call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.call(method, path, ADMIN_KEY, **kw)

    def assert_still_serves(self) -> None:
        """The next ordinary request is answered: nothing before it broke the gateway."""
        body = {"model": "gemma-4", "messages": [{"role": "user", "content": "hi"}]}
        r = self.team_call("POST", CHAT, json={**body, "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]


@contextmanager
def running_fleet(workdir: Path, team: str) -> Iterator[Fleet]:
    """A gateway with its own Redis, and `team` with a fresh key."""
    redis = RedisServer(workdir, appendonly=False)
    redis.start()
    teams = TeamsSettings(auth_required=True, redis_url=redis.url, admin_key=ADMIN_KEY)
    settings = fleet_settings(max_body_bytes=BODY_LIMIT, body_timeout_s=BODY_TIMEOUT_S)
    try:
        with serve_gateway(settings, simulated_pools, lambda: open_gate(teams)) as gw:
            admin = {"authorization": f"Bearer {ADMIN_KEY}"}
            created = httpx.post(
                gw.url + "/admin/teams", json={"name": team}, headers=admin, timeout=30
            )
            assert created.status_code == 201, created.text
            issued = httpx.post(
                gw.url + f"/admin/teams/{team}/keys", json={"name": "suite"}, headers=admin,
                timeout=30,
            )  # fmt: skip
            assert issued.status_code == 201, issued.text
            yield Fleet(gw, redis, team, issued.json()["key"])
    finally:
        redis.stop()


@pytest.fixture(scope="package")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(tmp_path_factory.mktemp("redis"), "reliability") as running:
        yield running
