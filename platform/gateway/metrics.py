"""The gateway's Prometheus metrics, in a registry of its own (never the process-global one,
so several gateways or tests in one process do not collide).

Each gateway replica counts only what it served. Behind a load-balanced URL (the serve Service
in a cluster) each scrape reaches one replica, so every exposition names the replica it comes
from (`gemma_fleet_gateway_replica_info`) and, inside Ray Serve, how many gateway replicas run
(`gemma_fleet_gateway_replicas`): a reader can then difference each replica's counters against
that replica's own last scrape and know when it has heard from all of them
(autoscaler/metrics_source.py)."""

from __future__ import annotations

import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds; LLM requests span milliseconds (TTFT) to minutes (long generations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Seconds per output token: from a fast small model (a few ms) to a loaded 31B (hundreds of ms).
TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)


class GatewayMetrics:
    """Label values stay bounded: models and pools are the ones the gateway serves, teams the
    ones an administrator created (an unauthenticated request has team "")."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # New per process: a restarted replica is a new replica whose counters start at 0.
        replica_id = uuid.uuid4().hex[:12]
        Gauge(
            "gemma_fleet_gateway_replica_info",
            "Always 1: the gateway replica every sample of this exposition comes from",
            ["gateway_replica"],
            registry=self.registry,
        ).labels(replica_id).set(1)
        self.gateway_replicas = Gauge(
            "gemma_fleet_gateway_replicas",
            "Running replicas of the gateway deployment as this replica last read them "
            "(-1: unknown; 1 outside Ray Serve)",
            registry=self.registry,
        )
        self.gateway_replicas.set(1)
        self.requests = Counter(
            "gemma_fleet_gateway_requests",
            "Requests answered, by endpoint, team, requested model, pool and HTTP status",
            ["endpoint", "team", "model", "pool", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "gemma_fleet_gateway_tokens",
            "Tokens served, by team, catalog model and kind (prompt or completion)",
            ["team", "model", "kind"],
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
            "Requests refused before reaching a pool, by endpoint, team, HTTP status and reason",
            ["endpoint", "team", "status", "reason"],
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
        self.tpot = Histogram(
            "gemma_fleet_gateway_time_per_output_token_seconds",
            "Streaming: time between first and last event per further output token, by pool",
            ["pool"],
            buckets=TPOT_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gemma_fleet_gateway_in_flight_requests",
            "Requests being served, by pool",
            ["pool"],
            registry=self.registry,
        )
        self.pool_retries = Counter(
            "gemma_fleet_gateway_pool_retries",
            "Calls to a pool tried again because it failed before its first reply, by pool",
            ["pool"],
            registry=self.registry,
        )
        self.pool_outages = Counter(
            "gemma_fleet_gateway_pool_outages",
            "Times a pool was seen with no running replica (and routed around), by pool",
            ["pool"],
            registry=self.registry,
        )
        self.streams_cut = Counter(
            "gemma_fleet_gateway_streams_cut",
            "Streams ended with an error event because their pool failed mid-stream, by pool",
            ["pool"],
            registry=self.registry,
        )
        self.live_replicas = Gauge(
            "gemma_fleet_gateway_pool_live_replicas",
            "Running replicas of each pool as the gateway last read them (-1: unknown)",
            ["pool"],
            registry=self.registry,
        )
        self.store_pending = Gauge(
            "gemma_fleet_gateway_store_pending_writes",
            "Accounting writes buffered while the team store (Redis) is unreachable",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def refused(self, endpoint: str, team: str, status: int, reason: str) -> None:
        # No model label: a refused request may name anything, and labels must stay bounded.
        self.rejections.labels(endpoint, team, str(status), reason).inc()
        self.requests.labels(endpoint, team, "", "", str(status)).inc()

    def answered(
        self, endpoint: str, team: str, model: str, pool: str, reason: str, started: float
    ) -> None:
        self.route_decisions.labels(pool, reason).inc()
        self.requests.labels(endpoint, team, model, pool, "200").inc()
        self.latency.labels(endpoint, pool).observe(time.perf_counter() - started)

    def served_tokens(self, team: str, model: str, prompt: int, completion: int) -> None:
        self.tokens.labels(team, model, "prompt").inc(prompt)
        self.tokens.labels(team, model, "completion").inc(completion)

    def first_token(self, pool: str, started: float) -> None:
        self.ttft.labels(pool).observe(time.perf_counter() - started)

    def per_output_token(self, pool: str, first_at: float, tokens: int) -> None:
        if tokens > 1:
            self.tpot.labels(pool).observe((time.perf_counter() - first_at) / (tokens - 1))
