"""What the fleet's Ray Serve application is doing while replicas start, pool by pool."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gemma_fleet.deployments.pools import FleetSpec


class FleetStartError(RuntimeError):
    """The fleet did not come up; the message says which pools and why."""


@dataclass(frozen=True)
class PoolProgress:
    """One pool's deployment: Ray Serve's status and its replicas by state."""

    name: str
    status: str
    running: int
    target: int
    replica_states: dict[str, int] = field(default_factory=dict)
    message: str = ""


@dataclass(frozen=True)
class FleetProgress:
    """The application's status and every pool's, as of one poll."""

    app_status: str
    pools: list[PoolProgress]
    message: str = ""
    elapsed_s: float = 0.0

    @property
    def ready(self) -> bool:
        return self.app_status == "RUNNING"

    @property
    def failed(self) -> bool:
        return self.app_status in ("DEPLOY_FAILED", "UNHEALTHY")


def poll_progress(fleet: FleetSpec, app_name: str, started: float) -> FleetProgress:
    """Ask the Serve controller how far the fleet's application has come."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return FleetProgress("NOT_STARTED", [], elapsed_s=time.monotonic() - started)
    pools = []
    for pool in fleet.model_pools:
        dep = app.deployments.get(pool.name)
        states = {_name(k): v for k, v in (dep.replica_states if dep else {}).items()}
        pools.append(
            PoolProgress(
                name=pool.name,
                status=_name(dep.status) if dep else "PENDING",
                running=states.get("RUNNING", 0),
                target=pool.replicas.start,
                replica_states=states,
                message=dep.message if dep else "",
            )
        )
    return FleetProgress(
        app_status=_name(app.status),
        pools=pools,
        message=app.message,
        elapsed_s=time.monotonic() - started,
    )


def wait_until_ready(
    fleet: FleetSpec,
    app_name: str,
    *,
    timeout_s: float,
    on_progress: Callable[[FleetProgress], None] | None = None,
    poll_s: float = 1.0,
) -> FleetProgress:
    """Poll until the application runs; raise FleetStartError when it fails or times out."""
    started = time.monotonic()
    while True:
        progress = poll_progress(fleet, app_name, started)
        if on_progress is not None:
            on_progress(progress)
        if progress.ready:
            return progress
        if progress.failed:
            raise FleetStartError(_failure(progress))
        if progress.elapsed_s > timeout_s:
            raise FleetStartError(f"not ready after {timeout_s:.0f} s: {_failure(progress)}")
        time.sleep(poll_s)


def _name(value: object) -> str:
    """Serve's status enums print as `ApplicationStatus.RUNNING`; their value is `RUNNING`."""
    return str(getattr(value, "value", value))


def _failure(progress: FleetProgress) -> str:
    lines = [f"application {progress.app_status}: {progress.message}".rstrip(": ")]
    lines += [
        f"  {p.name}: {p.status} {p.running}/{p.target} running {p.message}".rstrip()
        for p in progress.pools
        if p.status != "HEALTHY"
    ]
    return "\n".join(lines)
