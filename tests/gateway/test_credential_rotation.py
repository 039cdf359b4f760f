"""Rotating the gateway's own credentials (the admin key, the metrics token) without a restart.

The Helm chart gives them to the gateway as files of Secret volumes (GEMMA_FLEET_ADMIN_KEY_FILE,
GEMMA_FLEET_METRICS_TOKEN_FILE), which the kubelet updates in place when the Secret changes.
Here a real gateway (simulated pools, team keys on a real Redis) reads files laid out and
swapped as the kubelet does (tests/secret_volume.py); no Kubernetes runs here, so the kubelet's
own delay (about a minute) is not part of what is measured."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gateway_harness import RunningGateway, fleet_settings, serve_gateway, simulated_pools
from redis_server import RedisServer
from secret_volume import SecretVolume

from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.teams.credentials import RECHECK_S
from gemma_fleet.teams.settings import TeamsSettings

OLD_ADMIN, NEW_ADMIN = "admin-old-" + "a" * 30, "admin-new-" + "b" * 30
OLD_TOKEN, NEW_TOKEN = "metrics-old-" + "m" * 30, "metrics-new-" + "n" * 30
# Polling bound for a change to be taken up: the gateway looks at its files every RECHECK_S.
TAKEN_UP_WITHIN_S = 5 * RECHECK_S


@dataclass
class Rotating:
    gateway: RunningGateway
    admin: SecretVolume
    metrics: SecretVolume

    def admin_status(self, key: str) -> int:
        headers = {"authorization": f"Bearer {key}"}
        return httpx.get(self.gateway.url + "/admin/teams", headers=headers, timeout=30).status_code

    def metrics_status(self, token: str) -> int:
        headers = {"authorization": f"Bearer {token}"}
        return httpx.get(self.gateway.url + "/metrics", headers=headers, timeout=30).status_code


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def rotating(redis_url: str, tmp_path: Path) -> Iterator[Rotating]:
    """A gateway started on credentials in Secret-volume files, as the chart's pods are."""
    admin = SecretVolume(tmp_path / "admin", {"admin-key": OLD_ADMIN + "\n"})
    metrics = SecretVolume(tmp_path / "metrics", {"metrics-token": OLD_TOKEN})
    env = {
        "GEMMA_FLEET_AUTH": "required",
        "REDIS_URL": redis_url,
        "GEMMA_FLEET_ADMIN_KEY_FILE": str(admin.path("admin-key")),
        "GEMMA_FLEET_METRICS_TOKEN_FILE": str(metrics.path("metrics-token")),
    }
    settings = TeamsSettings.from_env(env)
    with serve_gateway(fleet_settings(), simulated_pools, lambda: open_gate(settings)) as gw:
        yield Rotating(gw, admin, metrics)


def _within(seconds: float, done: Callable[[], bool]) -> float:
    """Seconds until `done()` held; fails after `seconds`."""
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.2)
    return time.monotonic() - started


def test_a_rotated_admin_key_is_taken_up_without_a_restart(rotating: Rotating) -> None:
    assert rotating.admin_status(OLD_ADMIN) == 200
    assert rotating.admin_status(NEW_ADMIN) == 401
    rotating.admin.update({"admin-key": NEW_ADMIN + "\n"})
    _within(TAKEN_UP_WITHIN_S, lambda: rotating.admin_status(NEW_ADMIN) == 200)
    # The old key is revoked by the same change, not kept alongside.
    assert rotating.admin_status(OLD_ADMIN) == 401
    assert rotating.metrics_status(OLD_TOKEN) == 200  # the other credential is untouched


def test_a_rotated_metrics_token_is_taken_up_without_a_restart(rotating: Rotating) -> None:
    assert rotating.metrics_status(OLD_TOKEN) == 200
    rotating.metrics.update({"metrics-token": NEW_TOKEN})
    _within(TAKEN_UP_WITHIN_S, lambda: rotating.metrics_status(NEW_TOKEN) == 200)
    assert rotating.metrics_status(OLD_TOKEN) == 401
    assert rotating.admin_status(OLD_ADMIN) == 200


def test_an_unusable_credential_file_refuses_until_it_is_fixed(
    rotating: Rotating, caplog: pytest.LogCaptureFixture
) -> None:
    """A rotation that wrote an empty key: the old key does not stay good (the rotation may
    have been meant to revoke it); the admin API answers 503 saying the fault is the
    gateway's, without the file's path or content; the log names the file and the problem.
    Fixing the Secret brings it back, again without a restart."""
    caplog.set_level(logging.ERROR, logger="gemma_fleet.teams.credentials")
    rotating.admin.update({"admin-key": "\n"})
    _within(TAKEN_UP_WITHIN_S, lambda: rotating.admin_status(OLD_ADMIN) == 503)
    reply = httpx.get(
        rotating.gateway.url + "/admin/teams",
        headers={"authorization": f"Bearer {OLD_ADMIN}"},
        timeout=30,
    )
    error = reply.json()["error"]
    assert error["code"] == "credential_unavailable"
    assert "admin credential" in error["message"] and "log" in error["message"]
    assert str(rotating.admin.root) not in reply.text
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1, logged  # once for the problem, not once per request
    assert "GEMMA_FLEET_ADMIN_KEY_FILE" in logged[0] and "is set but empty" in logged[0]
    assert str(rotating.admin.path("admin-key")) in logged[0]
    assert rotating.metrics_status(OLD_TOKEN) == 200  # /metrics has its own credential

    rotating.admin.update({"admin-key": NEW_ADMIN})
    _within(TAKEN_UP_WITHIN_S, lambda: rotating.admin_status(NEW_ADMIN) == 200)
    assert rotating.admin_status(OLD_ADMIN) == 401


def test_both_the_variable_and_its_file_is_refused_at_start(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path, {"metrics-token": OLD_TOKEN})
    env = {
        "GEMMA_FLEET_AUTH": "disabled",
        "GEMMA_FLEET_METRICS_TOKEN": OLD_TOKEN,
        "GEMMA_FLEET_METRICS_TOKEN_FILE": str(volume.path("metrics-token")),
    }
    with pytest.raises(ValueError, match="set GEMMA_FLEET_METRICS_TOKEN or "
                       "GEMMA_FLEET_METRICS_TOKEN_FILE, not both"):  # fmt: skip
        TeamsSettings.from_env(env)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "No such file or directory"), ("", "is set but empty"), ("short", "at least 24")],
)
def test_a_credential_file_that_cannot_be_one_stops_the_gateway_from_starting(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "admin-key"
    if content is not None:
        path.write_text(content)
    env = {"GEMMA_FLEET_AUTH": "disabled", "GEMMA_FLEET_ADMIN_KEY_FILE": str(path)}
    with pytest.raises(ValueError) as refused:
        TeamsSettings.from_env(env)
    message = str(refused.value)
    assert "GEMMA_FLEET_ADMIN_KEY_FILE" in message and str(path) in message
    assert problem in message
