"""Run a fleet locally: start the cluster, deploy every pool behind one OpenAI-compatible
HTTP front, wait until replicas are up, and take it all down again on exit."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_fleet.deployments.fleet.cluster import LocalCluster, node_counts, start_local_cluster
from gemma_fleet.deployments.fleet.draining import drain_gateway, gateway_handle
from gemma_fleet.deployments.fleet.environment import scoped_environment
from gemma_fleet.deployments.fleet.progress import FleetProgress, wait_until_ready
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.fleet.team_store import LocalTeams, local_team_store
from gemma_fleet.deployments.pools import EngineKind, FleetSpec, default_fleet_path, load_fleet

log = logging.getLogger(__name__)
# Seconds past the longest drain that stopping waits for Serve to report the application gone.
STOP_MARGIN_S = 30.0

# Which tiny checkpoint imitates which size (deployments/checkpoints), for vLLM on CPU hosts.
TINY_VARIANT = {
    "gemma-4-31B": "text",
    "gemma-4-26B-A4B": "moe",
    "gemma-4-E2B": "kv-shared",
    "gemma-4-E4B": "multimodal",
}
# What vLLM's CPU build needs in every engine process (docs/vllm-cpu.md); the nodes this
# process starts inherit it.
CPU_VLLM_ENV = {
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def _quiet_driver_logs() -> None:
    """The fleet prints its own progress; Ray Serve's driver lines (every deployment's options,
    a handle's internals, "Deleting app") and vLLM's import-time Triton lines on a CPU host
    are nothing a fleet's user acts on. Their warnings and errors still show."""
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    logging.getLogger("vllm.triton_utils.importing").setLevel(logging.ERROR)


@dataclass(frozen=True)
class RunningFleet:
    """A fleet that is up: where to send requests and what runs it."""

    fleet: FleetSpec
    cluster: LocalCluster
    base_url: str  # OpenAI base URL, e.g. http://127.0.0.1:8000/v1
    progress: FleetProgress
    teams: LocalTeams = field(default_factory=LocalTeams)
    # Set it (e.g. on a second Ctrl-C) to stop without waiting for the answers in flight.
    cut_drain: threading.Event = field(default_factory=threading.Event)

    @property
    def api_key(self) -> str:
        """The local team's key (any string when auth is off)."""
        return self.teams.api_key or "no-key-needed"

    @property
    def models(self) -> list[str]:
        return [p.name for p in self.fleet.model_pools]


def gpu_host() -> bool:
    """Whether this machine has an NVIDIA GPU for real vLLM (the driver's device node)."""
    return Path("/dev/nvidiactl").exists()


def with_engine(fleet: FleetSpec, engine: EngineKind | None) -> FleetSpec:
    """The fleet with every pool served by `engine` (None: as the file says)."""
    if engine is None:
        return fleet
    pools = [p.model_copy(update={"engine": engine}) for p in fleet.model_pools]
    return fleet.model_copy(update={"model_pools": pools})


def tiny_checkpoints(fleet: FleetSpec) -> dict[str, str]:
    """Tiny random-weight checkpoints for vLLM pools that name none (CPU hosts), built once
    and cached by the checkpoint builder."""
    from gemma_fleet.deployments.checkpoints.build import ensure_tiny_checkpoint

    return {
        p.name: str(ensure_tiny_checkpoint(TINY_VARIANT[p.model]))
        for p in fleet.model_pools
        if p.engine is EngineKind.VLLM and p.checkpoint is None
    }


@contextmanager
def run_fleet(
    fleet: FleetSpec | Path | str | None = None,
    *,
    engine: EngineKind | None = None,
    settings: LocalFleetSettings | None = None,
    nodes: Mapping[str, int] | None = None,
    on_progress: Callable[[FleetProgress], None] | None = None,
) -> Iterator[RunningFleet]:
    """Start `fleet` (a FleetSpec, a fleet file, or a shipped fleet's name; default: the
    default fleet) on a local cluster and yield it once every pool's replicas run.

    `engine` overrides every pool's engine kind; `nodes` asks for more nodes in some node pools
    than the starting replicas need. On exit (or a failed start), Serve is shut down and every
    node this call started is stopped.
    """
    settings = settings or LocalFleetSettings()
    spec = fleet if isinstance(fleet, FleetSpec) else load_fleet(fleet or default_fleet_path())
    spec = with_engine(spec, engine)
    cpu_host = not gpu_host()
    uses_vllm = any(p.engine is EngineKind.VLLM for p in spec.model_pools)
    checkpoints = tiny_checkpoints(spec) if uses_vllm and cpu_host else {}
    # The nodes this process starts inherit these; given back on exit (as the cluster and the
    # team store give back theirs), so that a later fleet in this process starts clean.
    with scoped_environment(defaults=CPU_VLLM_ENV if uses_vllm and cpu_host else None):
        counts = node_counts(spec, nodes)
        # The store starts first and stops last: the nodes inherit its environment, and
        # replicas still draining at shutdown can settle their accounting.
        with local_team_store(
            settings.state_dir, auth=settings.auth, redis_url=settings.redis_url
        ) as teams:
            yield from _run_on_cluster(
                spec, settings, counts, cpu_host, checkpoints, teams, on_progress
            )


def _run_on_cluster(
    spec: FleetSpec,
    settings: LocalFleetSettings,
    counts: Mapping[str, int],
    cpu_host: bool,
    checkpoints: Mapping[str, str],
    teams: LocalTeams,
    on_progress: Callable[[FleetProgress], None] | None,
) -> Iterator[RunningFleet]:
    import ray
    from ray import serve

    from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME
    from gemma_fleet.gateway.fleet import build_fleet_app

    with _keep_signal_handlers():
        cluster = start_local_cluster(spec, settings, counts)
    cut_drain = threading.Event()
    gateway: Any = None
    try:
        with _keep_signal_handlers():
            if ray.is_initialized():
                # This process was connected to another cluster (an earlier fleet, a test's
                # Ray): the fleet's driver must talk to the cluster it just started.
                ray.shutdown()
            ray.init(
                address=cluster.address,
                namespace="gemma-fleet",
                log_to_driver=False,
                logging_level=logging.WARNING,  # not "Connecting to existing Ray cluster"
            )
        _quiet_driver_logs()
        serve.start(
            # One proxy on the head: nodes share this machine, so a proxy per node (Serve's
            # default) would bind the same port several times.
            proxy_location="HeadOnly",
            http_options={"host": settings.http_host, "port": settings.http_port},
        )
        app = build_fleet_app(spec, checkpoints=checkpoints, cpu_host=cpu_host)
        # Submit without waiting (serve.run waits for RUNNING): wait_until_ready polls and
        # reports every pool's replicas while they start.
        serve.run_many(
            # External scaler: `gemma-fleet autoscale --actuator ray` may set replica counts.
            [
                serve.RunTarget(
                    target=app,
                    name=FLEET_APP_NAME,
                    route_prefix="/",
                    external_scaler_enabled=True,
                )
            ],
            wait_for_ingress_deployment_creation=False,
            wait_for_applications_running=False,
        )
        progress = wait_until_ready(
            spec, FLEET_APP_NAME, timeout_s=settings.ready_timeout_s, on_progress=on_progress
        )
        gateway = gateway_handle(FLEET_APP_NAME)
        yield RunningFleet(
            fleet=spec,
            cluster=cluster,
            base_url=f"http://{settings.http_host}:{settings.http_port}/v1",
            progress=progress,
            teams=teams,
            cut_drain=cut_drain,
        )
    finally:
        _stop(cluster, spec.longest_drain_s, cut_drain, gateway=gateway)


@contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """Ray takes over SIGTERM twice: the head node's Python handler drains and exits the
    process, and ray.init's C-level handler aborts it; either would skip our orderly shutdown
    (and the caller's own handling). Put the caller's SIGINT/SIGTERM handlers back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def _stop(
    cluster: LocalCluster, drain_s: float, cut_drain: threading.Event, *, gateway: Any
) -> None:
    """Serve first, then the driver's connection, then the nodes; each step runs even when an
    earlier one failed. Serve stops in two phases, within `drain_s` (or until `cut_drain` is
    set). First the gateway stops accepting and its answers in flight finish (`gateway`, its
    handle, once the fleet came up): new requests get a 503 the SDKs retry, where the deleted
    application's missing route would answer a 404 they do not. Then the application is deleted (its
    replicas drain whatever is left while Serve's proxy still carries it, which
    `serve.shutdown` alone cuts: it stops the proxy first). Serve's controller and proxies then
    go with the nodes: `serve.shutdown` would kill the controller under its own pending calls,
    which Ray prints as two "Task ServeController... failed" lines on the console."""
    import ray
    from ray import serve

    from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME

    try:
        if ray.is_initialized():
            deadline = time.monotonic() + drain_s
            # A gateway that cannot be reached is left to the application's deletion, which
            # drains it too (with 404s for new requests).
            if gateway is not None:
                drain_gateway(gateway, deadline, cut_drain)
            # Not serve.delete's own wait: it gives up after 60 s, mid-drain.
            serve.delete(FLEET_APP_NAME, _blocking=False)
            while FLEET_APP_NAME in serve.status().applications:
                if time.monotonic() > deadline + STOP_MARGIN_S:
                    log.warning("the fleet application still stops after %.0f s", drain_s)
                    break
                if cut_drain.wait(0.5):
                    break
    except Exception:  # a failed step must not leave the nodes running
        log.exception("serve shutdown failed; stopping the nodes anyway")
    finally:
        try:
            ray.shutdown()
        finally:
            cluster.shutdown()
