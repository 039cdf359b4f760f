"""The gateway's Prometheus metrics, in a registry of its own (never the process-global one,
so several gateways or tests in one process do not collide), and, inside Ray Serve, mirrored
into Ray's metrics.

Each gateway replica counts only what it served, and there are two readers:

- Prometheus, in a cluster, scrapes Ray's metrics port on every Ray pod (the chart's
  PodMonitor). Ray's agent exports each process's metrics once, so the mirror
  (`ray_gemma_fleet_gateway_*`, each series labelled with its `gateway_replica`) sums right
  over any number of gateway replicas and proxies. A scrape of `/metrics` through the serve
  Service would not: it reaches one replica per scrape, chosen by whichever proxy answered.
- The autoscaler reads `/metrics` through that Service all the same (it has no pod list).
  So every exposition names the replica it comes from (`gemma_fleet_gateway_replica_info`)
  and, inside Ray Serve, how many gateway replicas run (`gemma_fleet_gateway_replicas`): it
  differences each replica's counters against that replica's own last scrape and knows when
  it has heard from all of them (autoscaler/metrics_source.py)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

# Seconds; LLM requests span milliseconds (TTFT) to minutes (long generations).
# 2: the default TTFT objective (autoscaler settings) is a boundary, so the SLO alert's p95
# from these buckets is above it exactly when more than 5% of first tokens are.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 5, 10, 30, 60, 120, 300)
# Seconds per output token: from a fast small model (a few ms) to a loaded 31B (hundreds of ms).
TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)
# The label Ray's copy of every series carries (Ray's own WorkerId names the process too, but
# means nothing to a reader of /metrics).
REPLICA_LABEL = "gateway_replica"
# For readers of /metrics only (see above), so never mirrored into Ray.
REPLICA_INFO = "gemma_fleet_gateway_replica_info"
REPLICA_COUNT = "gemma_fleet_gateway_replicas"
UNMIRRORED = (REPLICA_INFO, REPLICA_COUNT)


class _Series:
    """One labelled series, recorded in the registry and, when mirrored, in Ray. The mirror
    is a copy for Prometheus: if Ray refuses a record (its worker shutting down), the request
    being served must not fail for it, so the series logs once and stops mirroring."""

    __slots__ = ("_local", "_ray", "_tags")

    def __init__(self, local: Any, ray: Any | None, tags: dict[str, str]) -> None:
        self._local = local
        self._ray = ray
        self._tags = tags

    def inc(self, amount: float = 1) -> None:
        self._local.inc(amount)
        if self._ray is not None and amount > 0:  # Ray's counters refuse 0
            self._mirror("inc", amount)

    def set(self, value: float) -> None:
        self._local.set(value)
        if self._ray is not None:
            self._mirror("set", value)

    def observe(self, value: float) -> None:
        self._local.observe(value)
        if self._ray is not None:
            self._mirror("observe", value)

    def _mirror(self, method: str, value: float) -> None:
        try:
            getattr(self._ray, method)(value, tags=self._tags)
        except Exception:
            log.warning("Ray refused a metric record; not mirroring %s", self._tags, exc_info=True)
            self._ray = None


class _Metric:
    """A metric family: `labels(...)` picks a series, as with prometheus_client; a family
    without labels is its own series."""

    __slots__ = ("_labels", "_local", "_ray", "_series")

    def __init__(self, local: Any, ray: Any | None, labels: Sequence[str]) -> None:
        self._local = local
        self._ray = ray
        self._labels = tuple(labels)
        # Label values are bounded (see GatewayMetrics), so is this.
        self._series: dict[tuple[str, ...], _Series] = {}
        if not self._labels:  # the family is its only series
            self._series[()] = _Series(local, ray, {})

    @property
    def label_names(self) -> tuple[str, ...]:
        return self._labels

    def labels(self, *values: str, **named: str) -> _Series:
        """The series with these label values, in order or by name (not both)."""
        if named:
            if values or set(named) != set(self._labels):
                raise ValueError(f"give all of {self._labels} by position or by name")
            values = tuple(named[n] for n in self._labels)
        found = self._series.get(values)
        if found is None:
            tags = dict(zip(self._labels, values, strict=True)) if self._ray is not None else {}
            found = self._series[values] = _Series(self._local.labels(*values), self._ray, tags)
        return found

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def set(self, value: float) -> None:
        self.labels().set(value)


class GatewayMetrics:
    """Label values stay bounded: models and pools are the ones the gateway serves, teams the
    ones an administrator created (an unauthenticated request has team "").

    `mirror_to_ray` (inside a Ray Serve replica) also records every request metric in Ray's
    metrics, at about 3 us a record (benchmarks/gateway_metrics)."""

    def __init__(self, *, mirror_to_ray: bool = False) -> None:
        self.registry = CollectorRegistry()
        # New per process: a restarted replica is a new replica whose counters start at 0.
        self.replica_id = uuid.uuid4().hex[:12]
        self._ray: Any | None = None
        if mirror_to_ray:
            from ray.util import metrics as ray_metrics

            self._ray = ray_metrics
        Gauge(
            REPLICA_INFO,
            "Always 1: the gateway replica every sample of this exposition comes from",
            [REPLICA_LABEL],
            registry=self.registry,
        ).labels(self.replica_id).set(1)
        self.gateway_replicas = Gauge(
            REPLICA_COUNT,
            "Running replicas of the gateway deployment as this replica last read them "
            "(-1: unknown; 1 outside Ray Serve)",
            registry=self.registry,
        )
        self.gateway_replicas.set(1)
        self.requests = self._counter(
            "gemma_fleet_gateway_requests",
            "Requests answered, by endpoint, team, requested model, pool and HTTP status",
            ["endpoint", "team", "model", "pool", "status"],
        )
        self.tokens = self._counter(
            "gemma_fleet_gateway_tokens",
            "Tokens served, by team, catalog model and kind (prompt or completion)",
            ["team", "model", "kind"],
        )
        self.route_decisions = self._counter(
            "gemma_fleet_gateway_route_decisions",
            "Routing decisions by chosen pool and reason",
            ["pool", "reason"],
        )
        self.rejections = self._counter(
            "gemma_fleet_gateway_rejections",
            "Requests refused before reaching a pool, by endpoint, team, HTTP status and reason",
            ["endpoint", "team", "status", "reason"],
        )
        self.latency = self._histogram(
            "gemma_fleet_gateway_request_duration_seconds",
            "End-to-end time until the last byte, by endpoint and pool",
            ["endpoint", "pool"],
            LATENCY_BUCKETS,
        )
        self.ttft = self._histogram(
            "gemma_fleet_gateway_time_to_first_token_seconds",
            "Time until the first streamed event, by pool",
            ["pool"],
            LATENCY_BUCKETS,
        )
        self.tpot = self._histogram(
            "gemma_fleet_gateway_time_per_output_token_seconds",
            "Streaming: time between first and last event per further output token, by pool",
            ["pool"],
            TPOT_BUCKETS,
        )
        self.in_flight = self._gauge(
            "gemma_fleet_gateway_in_flight_requests", "Requests being served, by pool", ["pool"]
        )
        self.pool_retries = self._counter(
            "gemma_fleet_gateway_pool_retries",
            "Calls to a pool tried again because it failed before its first reply, by pool",
            ["pool"],
        )
        self.pool_outages = self._counter(
            "gemma_fleet_gateway_pool_outages",
            "Times a pool was seen with no running replica (and routed around), by pool",
            ["pool"],
        )
        self.whole_answer_waits = self._counter(
            "gemma_fleet_gateway_whole_answer_waits",
            "Whole answers with logprobs that waited for their turn at a pool (the entries "
            "its replicas are given to build at once), by pool",
            ["pool"],
        )
        self.streams_cut = self._counter(
            "gemma_fleet_gateway_streams_cut",
            "Streams ended with an error event because their pool failed mid-stream, by pool",
            ["pool"],
        )
        self.live_replicas = self._gauge(
            "gemma_fleet_gateway_pool_live_replicas",
            "Running replicas of each pool as the gateway last read them (-1: unknown)",
            ["pool"],
        )
        self.document_pages = self._counter(
            "gemma_fleet_gateway_document_pages",
            "PDF pages taken in as text and pictures (each page an image for the engine), by "
            "source: read, found in the replica's cache of recently read PDFs, or shared from "
            "a read of the same PDF in flight for another request",
            ["source"],
        )
        self.document_read = self._histogram(
            "gemma_fleet_gateway_document_read_duration_seconds",
            "Time to take in one PDF, its wait for the replica's PDF reader process "
            "included, by source (read, cache or shared)",
            ["source"],
            LATENCY_BUCKETS,
        )
        self.document_reader_stops = self._counter(
            "gemma_fleet_gateway_document_reader_stops",
            "Times the replica's PDF reader process was stopped midway through a PDF, by "
            "reason: timeout, crash (it died on the PDF), abandoned (every client waiting for "
            "it left), fault (it broke the wire or did not start)",
            ["reason"],
        )
        self.store_pending = self._gauge(
            "gemma_fleet_gateway_store_pending_writes",
            "Accounting writes buffered while the team store (Redis) is unreachable",
            [],
        )

    def _counter(self, name: str, doc: str, labels: list[str]) -> _Metric:
        local = Counter(name, doc, labels, registry=self.registry)
        return _Metric(local, self._mirror("Counter", name, doc, labels), labels)

    def _gauge(self, name: str, doc: str, labels: list[str]) -> _Metric:
        local = Gauge(name, doc, labels, registry=self.registry)
        return _Metric(local, self._mirror("Gauge", name, doc, labels), labels)

    def _histogram(
        self, name: str, doc: str, labels: list[str], buckets: Sequence[float]
    ) -> _Metric:
        local = Histogram(name, doc, labels, buckets=buckets, registry=self.registry)
        ray = self._mirror("Histogram", name, doc, labels, boundaries=list(buckets))
        return _Metric(local, ray, labels)

    def _mirror(self, kind: str, name: str, doc: str, labels: list[str], **extra: Any) -> Any:
        """Ray's copy of a metric under the same name (Ray's agent exports it prefixed `ray_`,
        counters with `_total`), or None when not mirroring."""
        if self._ray is None:
            return None
        metric = getattr(self._ray, kind)(name, doc, tag_keys=(*labels, REPLICA_LABEL), **extra)
        return metric.set_default_tags({REPLICA_LABEL: self.replica_id})

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
