"""The gateway's Prometheus metrics, in a registry of its own (never the process-global one,
so several gateways or tests in one process do not collide)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds; LLM requests span milliseconds (TTFT) to minutes (long generations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gemma_fleet_gateway_requests",
            "Requests answered, by endpoint, requested model, pool and HTTP status",
            ["endpoint", "model", "pool", "status"],
            registry=self.registry,
        )
        self.route_decisions = Counter(
            "gemma_fleet_gateway_route_decisions",
            "Routing decisions by chosen pool and reason",
            ["pool", "reason"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "gemma_fleet_gateway_rejections",
            "Requests refused before reaching a pool, by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gemma_fleet_gateway_request_duration_seconds",
            "End-to-end time until the last byte, by endpoint and pool",
            ["endpoint", "pool"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gemma_fleet_gateway_time_to_first_token_seconds",
            "Time until the first streamed event, by pool",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gemma_fleet_gateway_in_flight_requests",
            "Requests being served, by pool",
            ["pool"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def refused(self, endpoint: str, status: int) -> None:
        # No model label: a refused request may name anything, and labels must stay bounded.
        self.rejections.labels(endpoint, str(status)).inc()
        self.requests.labels(endpoint, "", "", str(status)).inc()

    def answered(self, endpoint: str, model: str, pool: str, reason: str, started: float) -> None:
        self.route_decisions.labels(pool, reason).inc()
        self.requests.labels(endpoint, model, pool, "200").inc()
        self.latency.labels(endpoint, pool).observe(time.perf_counter() - started)

    async def timed_stream(
        self,
        events: AsyncIterator[str],
        endpoint: str,
        model: str,
        pool: str,
        reason: str,
        started: float,
    ) -> AsyncIterator[str]:
        """Pass a stream through, observing time to first event and to the end."""
        first = True
        try:
            async for event in events:
                if first:
                    self.ttft.labels(pool).observe(time.perf_counter() - started)
                    first = False
                yield event
        finally:
            self.answered(endpoint, model, pool, reason, started)
