"""The gateway's metrics mirrored into Ray's (what every gateway replica in Ray Serve does, so
Prometheus reads each replica once through Ray's metrics port): the mirror never fails a
request. Ray's real metric classes with their record step replaced (outside a Ray worker they
discard records); the export through Ray's port is tested in test_serve_ingress.py."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from gemma_fleet.gateway.metrics import GatewayMetrics

REQUESTS = "gemma_fleet_gateway_requests_total"


def _answered(metrics: GatewayMetrics) -> None:
    metrics.answered("chat", "team-a", "gemma-4", "p1", "requested", time.perf_counter())


def test_a_record_ray_refuses_fails_no_request_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ray.util import metrics as ray_metrics

    refused = []
    record = ray_metrics.Metric._record

    def refuse(self: Any, value: float, tags: dict[str, str] | None = None) -> None:
        if not self._name.startswith("gemma_fleet_"):
            # Ray Serve's own metrics, from a Serve router an earlier test left in this
            # process (seen in CI: serve_deployment_queued_queries): not the gateway's
            return record(self, value, tags)
        refused.append(self._name)
        raise RuntimeError("the core worker is shutting down")

    monkeypatch.setattr(ray_metrics.Metric, "_record", refuse)
    metrics = GatewayMetrics(mirror_to_ray=True)
    with caplog.at_level(logging.WARNING, logger="gemma_fleet.gateway.metrics"):
        for _ in range(3):
            _answered(metrics)
            metrics.store_pending.set(4)
    labels = {"endpoint": "chat", "team": "team-a", "model": "gemma-4", "pool": "p1"}
    assert metrics.registry.get_sample_value(REQUESTS, {**labels, "status": "200"}) == 3
    assert metrics.registry.get_sample_value("gemma_fleet_gateway_store_pending_writes") == 4
    # Each series tried Ray once (route decision, requests, latency, store pending), then
    # stopped mirroring: one warning each, not one per request.
    assert len(refused) == 4
    assert len([r for r in caplog.records if "Ray refused" in r.getMessage()]) == 4


def test_without_the_mirror_nothing_reaches_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.util import metrics as ray_metrics

    def record(self: Any, value: float, tags: dict[str, str] | None = None) -> None:
        raise AssertionError("recorded in Ray without the mirror")

    monkeypatch.setattr(ray_metrics.Metric, "_record", record)
    metrics = GatewayMetrics()
    _answered(metrics)
    assert (
        metrics.registry.get_sample_value(
            REQUESTS,
            {
                "endpoint": "chat",
                "team": "team-a",
                "model": "gemma-4",
                "pool": "p1",
                "status": "200",
            },
        )
        == 1
    )
