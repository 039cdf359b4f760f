"""The local fleet's settings refuse values that would start a broken or unguarded fleet, and
reach Serve's HAProxy as the variables Ray reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemma_fleet.deployments.fleet.cluster import haproxy_environment
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings


def test_haproxy_gets_the_settings_ports_folder_and_timeouts() -> None:
    settings = LocalFleetSettings(
        haproxy_stats_port=18404, haproxy_metrics_port=19101, client_idle_timeout_s=45
    )
    env = haproxy_environment(Path("/tmp/gf-haproxy-x"), settings, longest_drain_s=300.5)
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"
    assert env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "19101"
    assert env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == "45"
    # answers in flight when HAProxy reloads may run as long as a pool drains (whole seconds)
    assert env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"] == "301"
    assert env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == "/tmp/gf-haproxy-x/haproxy.cfg"


def test_an_idle_timeout_of_zero_is_refused() -> None:
    """HAProxy reads `timeout client 0s` as no limit at all: the opposite of what was asked."""
    with pytest.raises(ValueError, match="client_idle_timeout_s must be at least 1 second"):
        LocalFleetSettings(client_idle_timeout_s=0)


def test_worker_ports_must_be_an_increasing_range() -> None:
    with pytest.raises(ValueError, match="increasing range"):
        LocalFleetSettings(min_worker_port=24000, max_worker_port=23000)
