"""`gemma-fleet autoscale`: run the autoscaler's reconcile loop against a fleet.

Reads demand from Prometheus endpoints (the gateway's /metrics, optionally engines'), plans
replicas per model pool, and applies them with hysteresis to Ray Serve (`--actuator ray`), a
KubeRay RayService (`--actuator kubernetes`) or nothing (`--actuator none`: an in-memory fleet,
to watch what it would do). `--dry-run` prints each step's plan and diff and changes nothing.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import typer

from gemma_fleet.autoscaler.actuators import Actuator, ActuatorError, FleetState, InMemoryActuator
from gemma_fleet.autoscaler.controller import Controller, StepReport, nodes_for
from gemma_fleet.autoscaler.plan import ModelDemand
from gemma_fleet.autoscaler.settings import ControllerSettings, SettingsError, load_settings
from gemma_fleet.cli.errors import CliError
from gemma_fleet.deployments.pools import FleetError, FleetSpec, load_fleet

if TYPE_CHECKING:
    from gemma_fleet.autoscaler.incumbent import IncumbentPlanner
    from gemma_fleet.autoscaler.status import ControllerStatus

log = logging.getLogger("gemma_fleet.autoscaler")

# `--once` has no earlier scrape to difference against: it scrapes, waits this long (or the
# interval, if shorter), scrapes again and plans on the rate in between.
ONCE_WINDOW_S = 10.0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the loop as Ctrl-C does; a step cut short is redone by the next start."""
    raise KeyboardInterrupt


class ActuatorKind(StrEnum):
    RAY = "ray"
    KUBERNETES = "kubernetes"
    NONE = "none"


def make_planner(fleet: FleetSpec, settings: ControllerSettings) -> IncumbentPlanner:
    """The exact planner (autoscaler/planner.py) bound to `fleet` and the settings' SLOs, told
    the running replicas so it keeps a layout within `settings.incumbent_tolerance` of the
    optimum (autoscaler/incumbent.py).

    The controller has already added its headroom to the demand it passes, so the planner is
    asked for no more on top (headroom 1.0)."""
    from gemma_fleet.autoscaler.capacity import CapacityModel, default_cache_path
    from gemma_fleet.autoscaler.incumbent import IncumbentPlanner
    from gemma_fleet.autoscaler.planner import Problem, problem_for

    # Simulated capacities are cached on disk: a restart does not re-simulate every pool.
    capacity = CapacityModel(cache_path=default_cache_path())
    slos = {pool.model: settings.slo_for(pool.model) for pool in fleet.model_pools}

    def problem(demand: Mapping[str, ModelDemand]) -> Problem:
        return problem_for(fleet, demand, slos, capacity, headroom=1.0)

    return IncumbentPlanner(
        problem, settings.incumbent_tolerance, replica_start_s=settings.replica_start_s
    )


def _check_urls(urls: list[str]) -> None:
    if not urls:
        raise CliError("give at least one --metrics-url (the gateway's /metrics)")
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CliError(f"--metrics-url {url!r}: expected an http(s) URL")


def _actuator(
    kind: ActuatorKind,
    fleet: FleetSpec,
    namespace: str | None,
    rayservice: str | None,
    ray_address: str,
) -> Actuator:
    if kind is ActuatorKind.KUBERNETES:
        if not namespace or not rayservice:
            raise CliError("--actuator kubernetes needs --namespace and --rayservice")
        from gemma_fleet.autoscaler.actuators.kubernetes import KubernetesActuator

        return KubernetesActuator(fleet, namespace, rayservice)
    if kind is ActuatorKind.RAY:
        import ray

        from gemma_fleet.autoscaler.actuators.ray_serve import RayServeActuator

        try:
            ray.init(address=ray_address, namespace="gemma-fleet", log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:
            raise CliError(f"cannot reach the Ray cluster at {ray_address}: {exc}") from exc
        return RayServeActuator(fleet)
    replicas = {p.name: p.replicas.start for p in fleet.model_pools}
    return InMemoryActuator(FleetState(replicas=replicas, nodes=nodes_for(fleet, replicas)))


def _serve_status(
    fleet: FleetSpec, settings: ControllerSettings, dry_run: bool, port: int | None, host: str
) -> ControllerStatus | None:
    """The autoscaler's own metrics and liveness on `host:port` (port None: not served)."""
    if port is None:
        return None
    from gemma_fleet.autoscaler.status import ControllerStatus, serve_status, stale_after

    status = ControllerStatus(
        fleet,
        stale_after_s=stale_after(settings.interval_s),
        slos={p.model: settings.slo_for(p.model) for p in fleet.model_pools},
        dry_run=dry_run,
    )
    try:
        serve_status(status, port, host)
    except OSError as exc:
        raise CliError(f"--status-port {port}: cannot listen: {exc.strerror or exc}") from exc
    log.info("status on port %d of %s: /metrics, /healthz", port, host)
    return status


def _print_step(report: StepReport, verbose: bool) -> None:
    if verbose:
        print(report.render(), flush=True)
        print(flush=True)
        return
    diff = report.diff()
    state = "applied" if report.applied else "no change" if not diff else "pending"
    print(f"step: {state}: " + ("; ".join(diff) if diff else "fleet matches plan"), flush=True)


def autoscale_command(
    fleet: Path = typer.Option(
        ..., "--fleet", "-f", help="fleet file (YAML), or Helm values (their fleet:)"
    ),
    metrics_url: list[str] = typer.Option(
        [], "--metrics-url", help="Prometheus endpoint to scrape (repeatable)"
    ),
    metrics_token: str | None = typer.Option(
        None,
        "--metrics-token",
        envvar="GEMMA_FLEET_METRICS_TOKEN",
        help="the gateway's GEMMA_FLEET_METRICS_TOKEN, when it sets one: sent as "
        "Authorization: Bearer only to a --metrics-url that answers 401 without it",
    ),
    metrics_token_file: Path | None = typer.Option(
        None,
        "--metrics-token-file",
        envvar="GEMMA_FLEET_METRICS_TOKEN_FILE",
        help="instead of --metrics-token: a file holding it (a mounted Secret), read again for "
        "every scrape that sends it, so a rotated token is taken up without a restart",
    ),
    actuator: ActuatorKind = typer.Option(
        ActuatorKind.NONE, "--actuator", help="where decisions go: ray, kubernetes or none"
    ),
    namespace: str | None = typer.Option(None, "--namespace", help="RayService namespace"),
    rayservice: str | None = typer.Option(None, "--rayservice", help="RayService name"),
    ray_address: str = typer.Option(
        "127.0.0.1:6790", "--ray-address", help="GCS address of the Ray cluster (--actuator ray)"
    ),
    interval: float | None = typer.Option(
        None, "--interval", help="seconds between steps (overrides the settings file)"
    ),
    settings_file: Path | None = typer.Option(
        None, "--settings", help="controller settings (YAML; docs/autoscaler.md)"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="print plan and diff; change nothing"),
    once: bool = typer.Option(False, "--once", help="one step, then exit"),
    status_port: int | None = typer.Option(
        None,
        "--status-port",
        help="serve the autoscaler's own /metrics and /healthz on this port (docs/autoscaler.md)",
    ),
    status_host: str = typer.Option(
        "127.0.0.1",
        "--status-host",
        help="the address the status port listens on; 0.0.0.0 for every interface (the Helm "
        "chart: the kubelet's probe and Prometheus reach the pod's IP)",
    ),
) -> None:
    """Keep the fleet's replicas and nodes matched to demand, calmly."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per scrape is noise
    try:
        spec = load_fleet(fleet)
    except FleetError as exc:
        raise CliError(str(exc)) from exc
    try:
        settings = load_settings(settings_file) if settings_file else ControllerSettings()
    except SettingsError as exc:
        raise CliError(str(exc)) from exc
    served = {p.model for p in spec.model_pools}
    if unknown := sorted(set(settings.model_slos) - served):
        raise CliError(
            f"settings model_slos: {', '.join(unknown)} is not served by any pool of the fleet "
            f"(it serves {', '.join(sorted(served))})"
        )
    if interval is not None:
        if interval <= 0:
            raise CliError(f"--interval {interval}: must be positive")
        settings = settings.model_copy(update={"interval_s": interval})
    _check_urls(metrics_url)
    if metrics_token and metrics_token_file:
        raise CliError("set --metrics-token or --metrics-token-file, not both")
    if status_port is not None and not 0 < status_port < 65536:
        raise CliError(f"--status-port {status_port}: expected a port in 1-65535")
    if once and status_port is not None:
        # One step then exit: nothing would be served, and a probe pointed at it would fail.
        raise CliError("--status-port serves a running autoscaler's status; --once exits after "
                       "one step: drop one of them")  # fmt: skip
    if actuator is ActuatorKind.KUBERNETES and not (namespace and rayservice):
        raise CliError("--actuator kubernetes needs --namespace and --rayservice")
    from gemma_fleet.autoscaler.metrics_source import (
        MetricsError,
        MetricsSource,
        http_fetch,
        read_token_file,
    )

    if metrics_token_file is not None:
        try:
            read_token_file(metrics_token_file)  # fail at start, not at the first 401
        except MetricsError as exc:
            raise CliError(str(exc)) from exc

    # The kubelet stops a pod with SIGTERM, and the chart's container runs this command as PID
    # 1, which the kernel spares any signal it has no handler for: without one, every stop
    # (an upgrade, a drained node) waited out the grace period for SIGKILL.
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    try:
        planner = make_planner(spec, settings)
        source = MetricsSource(
            metrics_url,
            spec,
            fetch=http_fetch(token=metrics_token, token_file=metrics_token_file),
            assumed_prompt_tokens=settings.assumed_prompt_tokens,
            assumed_output_tokens=settings.assumed_output_tokens,
            # Gateway replicas behind one URL are each reached by chance: ten missed scrapes in
            # a row (1 in 1,000 with two replicas) before one is taken for gone.
            replica_stale_s=max(300.0, 10 * settings.interval_s),
        )
        target = _actuator(actuator, spec, namespace, rayservice, ray_address)
        target.observe()  # fail fast on a misconfigured target instead of logging each step
        controller = Controller(spec, planner, source, target, settings, dry_run=dry_run)
        if once:
            source.read()
            time.sleep(min(ONCE_WINDOW_S, settings.interval_s))
            _print_step(controller.step(), verbose=True)
            return
        status = _serve_status(spec, settings, dry_run, status_port, status_host)

        def on_step(report: StepReport) -> None:
            _print_step(report, verbose=dry_run)
            if status is not None:
                status.record(report)

        controller.run(
            on_step=on_step,
            on_failure=(lambda _: status.record_failure()) if status is not None else None,
        )
    except (ActuatorError, MetricsError) as exc:  # the loop retries these; only --once ends
        raise CliError(str(exc)) from exc
    except KeyboardInterrupt:
        print("autoscaler stopped", file=sys.stderr)
    finally:
        if previous_sigterm is not None:  # None: set outside Python, not ours to put back
            signal.signal(signal.SIGTERM, previous_sigterm)
