"""What the running autoscaler says about itself: Prometheus metrics and a liveness check.

An SRE paying for the GPUs wants to see, without reading logs, what the fleet costs now and
what the autoscaler wants it to cost, how many replicas each pool runs against how many it
wants, the demand it plans for, and whether its steps succeed. `ControllerStatus` keeps that
from each step's report (controller.StepReport) in its own registry, and `serve_status` puts
it on a small HTTP server beside the loop:

- `GET /metrics`: Prometheus text, every series named `gemma_fleet_autoscaler_*`, among them
  the latency objectives each pool is sized for (`..._slo_*_seconds`), so an alert compares
  what users see at the gateway with them and the rule file keeps no copy of the settings;
- `GET /healthz`: 200 while steps keep finishing, 503 once none has finished for
  `stale_after_s` (a hung API call or scrape), which a liveness probe turns into a restart.
  A failing step still finishes: restarting does not mend a broken API server, so failures
  are counted (`..._steps_total{result="failed"}`) for an alert, not fed to the probe.

The server runs in a daemon thread: the reconcile loop is synchronous and owns the main one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gemma_fleet.autoscaler.actuators import FleetState
from gemma_fleet.autoscaler.controller import StepReport, nodes_for
from gemma_fleet.autoscaler.plan import Slo
from gemma_fleet.deployments.pools import FleetSpec

PREFIX = "gemma_fleet_autoscaler_"
# A step may simulate capacities for a pool and workload mix not seen before (seconds to a
# minute each; the first step of a fresh install does it for every pool), so a slow step is
# not a hung one. Stale only after this long, or ten intervals if that is longer.
MIN_STALE_AFTER_S = 900.0


class StepResult(StrEnum):
    """Values of the `result` label of `gemma_fleet_autoscaler_steps_total`."""

    APPLIED = "applied"  # the fleet was changed
    UNCHANGED = "unchanged"  # the fleet already matched the plan
    DRY_RUN = "dry_run"  # a change was wanted and, in dry-run mode, not made
    WAITING = "waiting"  # no plan yet (waiting for a second scrape)
    FAILED = "failed"  # the step raised (metrics, planner or actuator); retried next interval


def stale_after(interval_s: float) -> float:
    """Seconds without a finished step after which /healthz fails, for a loop stepping every
    `interval_s`."""
    return max(MIN_STALE_AFTER_S, 10.0 * interval_s)


def fleet_cost_per_hour(fleet: FleetSpec, state: FleetState) -> float:
    """GPU cost per hour of `state`'s nodes, or of the nodes its replicas need where the
    state carries no node counts (a local Ray cluster)."""
    nodes = _nodes(fleet, state)
    return sum(
        nodes.get(p.name, 0) * p.gpus_per_node * p.cost_per_gpu_hour for p in fleet.node_pools
    )


class ControllerStatus:
    """The autoscaler's own metrics and liveness, fed one step report at a time. `slos`:
    the objectives the planner holds each catalog model to (settings.slo_for), published
    per pool; models it does not name publish none."""

    def __init__(
        self,
        fleet: FleetSpec,
        *,
        stale_after_s: float,
        slos: Mapping[str, Slo] | None = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet = fleet
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._last_finished = clock()  # the loop's start counts as a heartbeat
        self._steps = 0
        self.registry = CollectorRegistry()
        r = self.registry
        self.steps = Counter(
            PREFIX + "steps", "reconcile steps finished, by outcome", ["result"], registry=r
        )
        self.last_step = Gauge(
            PREFIX + "last_step_timestamp_seconds",
            "Unix time the last step finished (failed or not)",
            registry=r,
        )
        self.replicas = Gauge(
            PREFIX + "replicas",
            "replicas per model pool: the target now (observed), wanted (desired), and up and "
            "loaded (serving, where the actuator can tell)",
            ["pool", "state"],
            registry=r,
        )
        self.nodes = Gauge(
            PREFIX + "nodes",
            "nodes per node pool: now (observed) and wanted (desired)",
            ["node_pool", "state"],
            registry=r,
        )
        self.cost = Gauge(
            PREFIX + "cost_per_hour",
            "GPU cost per hour of the nodes running now (observed) and of the desired fleet",
            ["state"],
            registry=r,
        )
        self.plan_cost = Gauge(
            PREFIX + "plan_cost_per_hour",
            "GPU cost per hour of the planner's plan, before the per-pool safety rules",
            registry=r,
        )
        self.plan_feasible = Gauge(
            PREFIX + "plan_feasible",
            "1 when the last plan meets all demand, 0 when some demand cannot be served "
            "(NaN before the first plan)",
            registry=r,
        )
        # Not 0 (the client's default) before there is a plan: that reads as "demand cannot be
        # met" and fires its alert while the autoscaler has merely not planned yet.
        self.plan_feasible.set(float("nan"))
        self.demand = Gauge(
            PREFIX + "demand_requests_per_second",
            "requests/s per model with headroom: this step's forecast, and the stabilised "
            "rate planned for",
            ["model", "kind"],
            registry=r,
        )
        self.changes = Counter(
            PREFIX + "replica_changes",
            "replicas added (up) or removed (down) per model pool",
            ["pool", "direction"],
            registry=r,
        )
        Gauge(PREFIX + "dry_run", "1 when the autoscaler changes nothing", registry=r).set(
            1 if dry_run else 0
        )
        for result in StepResult:
            self.steps.labels(result)  # every outcome reads 0 before it first happens
        self._publish_slos(slos or {})

    def record(self, report: StepReport) -> None:
        """Take in a finished step's report."""
        if report.plan is None:
            result = StepResult.WAITING
        elif report.applied:
            result = StepResult.APPLIED
        elif report.diff():
            result = StepResult.DRY_RUN
        else:
            result = StepResult.UNCHANGED
        self._set_state("observed", report.observed)
        for pool, n in report.observed.serving.items():
            self.replicas.labels(pool, "serving").set(n)
        if report.plan is not None:
            self._set_state("desired", report.desired)
            self.plan_cost.set(report.plan.cost_per_hour)
            self.plan_feasible.set(1 if report.plan.feasible else 0)
        for kind, demand in (("forecast", report.forecast), ("planned", report.demand)):
            for model, d in demand.items():
                self.demand.labels(model, kind).set(d.requests_per_s)
        if report.applied:
            for pool, want in report.desired.replicas.items():
                have = report.observed.replicas.get(pool, 0)
                if want != have:
                    self.changes.labels(pool, "up" if want > have else "down").inc(abs(want - have))
        self._finished(result)

    def record_failure(self) -> None:
        """Count a step that raised."""
        self._finished(StepResult.FAILED)

    def health(self) -> tuple[bool, str]:
        """(alive, why): whether a step has finished within `stale_after_s`."""
        with self._lock:
            age = self.clock() - self._last_finished
            steps = self._steps
        if age > self.stale_after_s:
            what = "no step has finished" if steps == 0 else "the last step finished"
            return False, f"stale: {what} {age:.0f} s ago (limit {self.stale_after_s:.0f} s)"
        if steps == 0:
            return True, f"starting: no step finished yet ({age:.0f} s since start)"
        return (
            True,
            f"ok: {steps} step{'s' if steps > 1 else ''} finished, the last {age:.0f} s ago",
        )

    def _publish_slos(self, slos: Mapping[str, Slo]) -> None:
        ttft = Gauge(
            PREFIX + "slo_ttft_p95_seconds",
            "p95 time to first token each pool is sized to hold (settings slo / model_slos)",
            ["pool", "model"],
            registry=self.registry,
        )
        tpot = Gauge(
            PREFIX + "slo_tpot_p95_seconds",
            "p95 time per output token each pool is sized to hold (settings slo / model_slos)",
            ["pool", "model"],
            registry=self.registry,
        )
        for pool in self.fleet.model_pools:
            if (slo := slos.get(pool.model)) is not None:
                ttft.labels(pool.name, pool.model).set(slo.ttft_p95_s)
                tpot.labels(pool.name, pool.model).set(slo.tpot_p95_s)

    def _set_state(self, state: str, fleet_state: FleetState) -> None:
        for pool, n in fleet_state.replicas.items():
            self.replicas.labels(pool, state).set(n)
        for node_pool, n in _nodes(self.fleet, fleet_state).items():
            self.nodes.labels(node_pool, state).set(n)
        self.cost.labels(state).set(fleet_cost_per_hour(self.fleet, fleet_state))

    def _finished(self, result: StepResult) -> None:
        self.steps.labels(result).inc()
        self.last_step.set(self.wall_clock())
        with self._lock:
            self._last_finished = self.clock()
            self._steps += 1


def _nodes(fleet: FleetSpec, state: FleetState) -> Mapping[str, int]:
    """`state`'s nodes, or the nodes its replicas need where it carries none."""
    return state.nodes or nodes_for(fleet, state.replicas)


def serve_status(status: ControllerStatus, port: int, host: str) -> ThreadingHTTPServer:
    """Serve `status` on `host:port` (0: any free port; the bound one is
    `server.server_address[1]`) from a daemon thread; `server.shutdown()` stops it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, CONTENT_TYPE_LATEST, generate_latest(status.registry))
            elif path == "/healthz":
                alive, why = status.health()
                self._reply(200 if alive else 503, "text/plain; charset=utf-8", why.encode())
            else:
                body = f"no such path {path!r}: try /metrics or /healthz".encode()
                self._reply(404, "text/plain; charset=utf-8", body)

        def _reply(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every 30 s is not worth a log line

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="autoscaler-status", daemon=True).start()
    return server
