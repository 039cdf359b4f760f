"""Rotating the Redis password under a running gateway, without restarting it.

The chart gives the gateway the Redis password as a file of a Secret volume
(REDIS_PASSWORD_FILE), which the kubelet updates in place when the Secret changes. Here a real
redis-server changes its password at run time (`CONFIG SET requirepass`, as a managed Redis's
rotation does; connections already logged in stay so, as in Redis), and a real gateway
(simulated pools) reads a file laid out and swapped as the kubelet does
(tests/secret_volume.py). `CLIENT KILL` drops the gateway's connections, as a Redis restart or
failover would, so that it must log in again. No Kubernetes runs here: the kubelet's own delay
(about a minute) is not part of what is measured."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from gateway_harness import RunningGateway, fleet_settings, serve_gateway, simulated_pools
from redis_server import RedisServer
from secret_volume import SecretVolume

from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.teams.credentials import RECHECK_S
from gemma_fleet.teams.settings import TeamsSettings

ADMIN = "admin-" + "r" * 40
OLD_PASSWORD, NEW_PASSWORD = "old redis password", "new-redis-password-2"
TAKEN_UP_WITHIN_S = 5 * RECHECK_S


@dataclass
class Rotating:
    gateway: RunningGateway
    server: RedisServer
    password: SecretVolume
    key: str  # a team key issued through the gateway

    def redis(self, password: str, username: str | None = None) -> redis.Redis:
        return redis.Redis(port=self.server.port, username=username, password=password)

    def rotate_redis(self, old: str, new: str) -> None:
        """Redis takes `new`, and drops every client but this one (a restart, a failover)."""
        with self.redis(old) as admin:
            admin.config_set("requirepass", new)
            admin.client_kill_filter(_type="normal", skipme=True)

    def chat_status(self) -> int:
        body = {"model": "e2b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        headers = {"authorization": f"Bearer {self.key}"}
        url = self.gateway.url + "/v1/chat/completions"
        return httpx.post(url, json=body, headers=headers, timeout=30).status_code

    def admin_status(self) -> int:
        headers = {"authorization": f"Bearer {ADMIN}"}
        return httpx.get(self.gateway.url + "/admin/teams", headers=headers, timeout=30).status_code


def _within(seconds: float, done: Callable[[], bool]) -> None:
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.2)


@pytest.fixture
def rotating(tmp_path: Path) -> Iterator[Rotating]:
    """A gateway whose Redis password is a Secret-volume file, as the chart's pods have it."""
    server = RedisServer(tmp_path / "redis-data")
    (tmp_path / "redis-data").mkdir()
    server.start()
    try:
        with redis.Redis(port=server.port) as bare:
            bare.config_set("requirepass", OLD_PASSWORD)
        password = SecretVolume(tmp_path / "redis", {"redis-password": OLD_PASSWORD + "\n"})
        env = {
            "GEMMA_FLEET_AUTH": "required",
            "REDIS_URL": server.url,
            "REDIS_PASSWORD_FILE": str(password.path("redis-password")),
            "GEMMA_FLEET_ADMIN_KEY": ADMIN,
        }
        settings = TeamsSettings.from_env(env)
        with serve_gateway(fleet_settings(), simulated_pools, lambda: open_gate(settings)) as gw:
            headers = {"authorization": f"Bearer {ADMIN}"}
            made = httpx.post(gw.url + "/admin/teams", json={"name": "rot"}, headers=headers)
            assert made.status_code == 201, made.text
            issued = httpx.post(gw.url + "/admin/teams/rot/keys", json={}, headers=headers)
            yield Rotating(gw, server, password, issued.json()["key"])
    finally:
        server.stop()


def test_a_rotated_redis_password_is_taken_up_without_a_restart(
    rotating: Rotating, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis moves to the new password before the gateway's file has it (the kubelet is a
    minute behind): the gateway answers 503, says why in its log once, and serves again as soon
    as the file changes. A gateway holding the password it started with never would."""
    caplog.set_level(logging.ERROR, logger="gemma_fleet.teams.access")
    assert rotating.chat_status() == 200
    rotating.rotate_redis(OLD_PASSWORD, NEW_PASSWORD)
    for _ in range(3):
        assert rotating.chat_status() == 503
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1, logged  # once for the problem, not once per request
    assert "Redis refuses the gateway's login" in logged[0] and "REDIS_PASSWORD_FILE" in logged[0]
    assert OLD_PASSWORD not in logged[0]

    rotating.password.update({"redis-password": NEW_PASSWORD})
    _within(TAKEN_UP_WITHIN_S, lambda: rotating.chat_status() == 200)
    assert rotating.admin_status() == 200


def test_the_admin_api_alone_leaves_the_same_trace(
    rotating: Rotating, caplog: pytest.LogCaptureFixture
) -> None:
    """An operator fixing things through the admin API or CLI while no team traffic flows
    (the API's key checks log nothing then): its 503s leave the same single line."""
    caplog.set_level(logging.ERROR, logger="gemma_fleet.teams.access")
    rotating.rotate_redis(OLD_PASSWORD, NEW_PASSWORD)
    for _ in range(3):
        assert rotating.admin_status() == 503
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1, logged
    assert "Redis refuses the gateway's login" in logged[0]

    rotating.password.update({"redis-password": NEW_PASSWORD})
    _within(TAKEN_UP_WITHIN_S, lambda: rotating.admin_status() == 200)
    # A call that passed ends the episode: the next refusal is news and is logged again.
    rotating.rotate_redis(NEW_PASSWORD, OLD_PASSWORD)
    assert rotating.admin_status() == 503
    assert len(caplog.records) == 2, [r.getMessage() for r in caplog.records]


def test_connections_already_open_outlive_the_file_changing_first(rotating: Rotating) -> None:
    """The other order, as with a managed Redis that accepts both passwords for a while, or
    the chart's Redis restarted after its Secret changed: the file changes first. The
    connections the gateway has stay logged in; those it opens after Redis moved use the new
    password."""
    assert rotating.chat_status() == 200
    rotating.password.update({"redis-password": NEW_PASSWORD})
    time.sleep(RECHECK_S + 0.5)
    assert rotating.chat_status() == 200  # its pooled connections, logged in with the old one
    rotating.rotate_redis(OLD_PASSWORD, NEW_PASSWORD)
    _within(TAKEN_UP_WITHIN_S, lambda: rotating.chat_status() == 200)


def test_an_unusable_password_file_is_logged_and_fixed_without_a_restart(
    rotating: Rotating, caplog: pytest.LogCaptureFixture
) -> None:
    """An emptied Secret: no connection can log in, which clients see as the store being
    unavailable (503); the log names the file and the problem, not as a refusal by Redis."""
    caplog.set_level(logging.ERROR, logger="gemma_fleet")
    rotating.password.update({"redis-password": "\n"})
    time.sleep(RECHECK_S + 0.5)
    rotating.rotate_redis(OLD_PASSWORD, OLD_PASSWORD)  # drops the gateway's connections
    reply_status = rotating.chat_status()
    assert reply_status == 503
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1, logged
    assert "REDIS_PASSWORD_FILE" in logged[0] and "is empty" in logged[0]
    assert str(rotating.password.path("redis-password")) in logged[0]
    assert "refuses the gateway's login" not in logged[0]

    rotating.password.update({"redis-password": OLD_PASSWORD})
    _within(TAKEN_UP_WITHIN_S, lambda: rotating.chat_status() == 200)


def test_a_redis_user_in_the_url_logs_in_with_the_files_password(tmp_path: Path) -> None:
    """An ACL user (redis://user@host/0) with its password in the file: redis-py refuses a user
    in the URL beside a password provider, so the gateway moves the user into it."""
    server = RedisServer(tmp_path / "redis-data")
    (tmp_path / "redis-data").mkdir()
    server.start()
    try:
        with redis.Redis(port=server.port) as bare:
            bare.acl_setuser(
                "gateway", enabled=True, passwords=["+user-password-1"], keys=["*"],
                channels=["*"], commands=["+@all"],
            )  # fmt: skip
            bare.config_set("requirepass", "nobody-else-gets-in")
        volume = SecretVolume(tmp_path / "redis", {"redis-password": "user-password-1"})
        env = {
            "GEMMA_FLEET_AUTH": "required",
            "REDIS_URL": f"redis://gateway@127.0.0.1:{server.port}/0",
            "REDIS_PASSWORD_FILE": str(volume.path("redis-password")),
            "GEMMA_FLEET_ADMIN_KEY": ADMIN,
        }
        settings = TeamsSettings.from_env(env)
        with serve_gateway(fleet_settings(), simulated_pools, lambda: open_gate(settings)) as gw:
            headers = {"authorization": f"Bearer {ADMIN}"}
            assert httpx.get(gw.url + "/admin/teams", headers=headers).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("extra", "content", "problem"),
    [
        ({"REDIS_PASSWORD": "x"}, "pw", "set REDIS_PASSWORD or REDIS_PASSWORD_FILE, not both"),
        ({"REDIS_URL": "redis://:pw@redis:6379/0"}, "pw", "REDIS_URL carries a password"),
        ({}, None, "REDIS_PASSWORD_FILE: cannot read {path}: No such file or directory"),
        ({}, " \n", "REDIS_PASSWORD_FILE ({path}) is empty"),
    ],
)
def test_a_redis_password_file_that_cannot_be_used_stops_the_start(
    tmp_path: Path, extra: dict[str, str], content: str | None, problem: str
) -> None:
    path = tmp_path / "redis-password"
    if content is not None:
        path.write_text(content)
    env = {"REDIS_URL": "redis://redis:6379/0", "REDIS_PASSWORD_FILE": str(path), **extra}
    with pytest.raises(ValueError) as refused:
        TeamsSettings.from_env(env)
    assert problem.format(path=path) in str(refused.value)
