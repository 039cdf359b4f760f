"""Apply the controller's decisions to the fleet's Ray Serve application on a Ray cluster.

Ray Serve 2.60's external-scaler API is the mechanism: an application deployed with
`external_scaler_enabled=True` accepts replica targets from outside through the Serve
controller's `update_deployment_replicas` (what the dashboard's
`POST /api/v1/applications/{app}/deployments/{deployment}/scale` calls). Replicas are added or
removed without redeploying anything, and a removed replica drains gracefully: Serve stops
routing to it and waits for its in-flight requests (`graceful_shutdown_timeout_s`).

The API is only accepted for applications that opted in, and a deployment that still carries
an `autoscaling_config` would be scaled by Serve's own autoscaler as well, so `observe()`
refuses both with an error that says what to change. The local cluster's nodes are fixed when
it starts, so node counts are neither observed nor applied here.

The driver talks to the Serve controller actor directly (the dashboard is off on the local
fleet); the caller connects to the cluster with `ray.init(address=...)` first.
"""

from __future__ import annotations

from typing import Any

from gemma_fleet.autoscaler.actuators import ActuatorError, FleetState
from gemma_fleet.deployments.pools import FleetSpec
from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME


def _controller() -> Any:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    if not ray.is_initialized():
        raise ActuatorError("not connected to a Ray cluster (ray.init first)")
    try:
        return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError as exc:
        raise ActuatorError("Ray Serve is not running on this cluster") from exc


def _running(deployments: dict[str, Any], fleet: FleetSpec) -> dict[str, int]:
    """RUNNING replicas per pool. Serve marks a replica RUNNING once its constructor returned,
    and a pool replica's constructor returns with its engine loaded, so these serve."""
    return {
        p.name: sum(
            1
            for r in (deployments.get(p.name) or {}).get("replicas") or []
            if r.get("state") == "RUNNING"
        )
        for p in fleet.model_pools
    }


class RayServeActuator:
    """Sets replica targets of the fleet's pool deployments on the connected Ray cluster."""

    manages_nodes = False

    def __init__(self, fleet: FleetSpec, *, app_name: str = FLEET_APP_NAME) -> None:
        self.fleet = fleet
        self.app_name = app_name

    def details(self) -> dict[str, Any]:
        """Serve's details of the fleet application (ServeInstanceDetails' application entry)."""
        import ray

        details = ray.get(_controller().get_serve_instance_details.remote())
        app = (details.get("applications") or {}).get(self.app_name)
        if app is None:
            raise ActuatorError(f"Ray Serve has no application named {self.app_name!r}")
        return dict(app)

    def observe(self) -> FleetState:
        """Each pool deployment's current target replica count, and its RUNNING replicas."""
        app = self.details()
        if not app.get("external_scaler_enabled"):
            raise ActuatorError(
                f"application {self.app_name!r} was deployed without external_scaler_enabled; "
                "redeploy it with external_scaler_enabled=True so the autoscaler may set replicas"
            )
        deployments = app.get("deployments") or {}
        missing = [p.name for p in self.fleet.model_pools if p.name not in deployments]
        if missing:
            raise ActuatorError(f"application {self.app_name!r} lacks pools: {', '.join(missing)}")
        fighting = [
            p.name
            for p in self.fleet.model_pools
            if (deployments[p.name].get("deployment_config") or {}).get("autoscaling_config")
        ]
        if fighting:
            raise ActuatorError(
                "Ray Serve autoscaling is configured on "
                f"{', '.join(fighting)}; give those deployments num_replicas instead"
            )
        return FleetState(
            replicas={
                p.name: int(deployments[p.name]["target_num_replicas"])
                for p in self.fleet.model_pools
            },
            serving=_running(deployments, self.fleet),
        )

    def apply(self, desired: FleetState) -> None:
        """Set each named pool's target; unchanged targets are left alone."""
        import ray
        from ray.serve._private.common import DeploymentID

        current = self.observe().replicas
        controller = _controller()
        for pool, count in desired.replicas.items():
            if current.get(pool) == count:
                continue
            deployment = DeploymentID(name=pool, app_name=self.app_name)
            try:
                ray.get(controller.update_deployment_replicas.remote(deployment, count))
            except ray.exceptions.RayTaskError as exc:
                raise ActuatorError(f"Ray Serve refused {pool} -> {count}: {exc}") from exc
