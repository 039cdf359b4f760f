"""Apply the controller's decisions to a KubeRay RayService with the official client.

What is written (all in one JSON merge patch carrying the object's resourceVersion):

- `spec.serveConfigV2` (a YAML string): in the application named FLEET_APP_NAME, each pool
  deployment gets `num_replicas: N` and `autoscaling_config: null` - Ray Serve refuses a number
  next to an autoscaling config, and two autoscalers on one deployment would fight. The whole
  string is rewritten, so YAML comments in it do not survive the first change.
- `spec.rayClusterConfig.workerGroupSpecs[]` of the group named after each node pool:
  `minReplicas` = the nodes the plan needs, `maxReplicas` = the node pool's `max_nodes`, and
  `replicas` raised to at least `minReplicas` - never lowered: KubeRay deletes pods when it
  drops, at random unless in-tree autoscaling is on. With `enableInTreeAutoscaling: true`,
  lowering `minReplicas` lets the Ray autoscaler remove nodes once they are idle, so no node
  that still hosts a serving or draining replica goes away; with it off, idle nodes stay (and a
  warning says so).

A merge patch replaces lists whole, so the patch carries the complete workerGroupSpecs list as
read; the resourceVersion makes the API server refuse it (409 Conflict) if anything changed the
object in between, and the actuator then reads again and rebuilds the patch.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import yaml

from gemma_fleet.autoscaler.actuators import ActuatorError, FleetState
from gemma_fleet.deployments.pools import FleetSpec
from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME

log = logging.getLogger(__name__)

GROUP = "ray.io"
VERSION = "v1"
PLURAL = "rayservices"
FIELD_MANAGER = "gemma-fleet-autoscaler"
MERGE_PATCH = "application/merge-patch+json"


def serve_config(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The RayService's serveConfigV2, parsed (ActuatorError when missing or not a mapping)."""
    text = obj.get("spec", {}).get("serveConfigV2")
    if not isinstance(text, str):
        raise ActuatorError("the RayService has no spec.serveConfigV2")
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ActuatorError(f"spec.serveConfigV2 is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ActuatorError("spec.serveConfigV2 is not a mapping")
    return config


def _application(config: Mapping[str, Any], app_name: str) -> dict[str, Any]:
    for app in config.get("applications") or []:
        if isinstance(app, dict) and app.get("name") == app_name:
            return app
    raise ActuatorError(f"spec.serveConfigV2 has no application named {app_name!r}")


def _deployment_replicas(deployment: Mapping[str, Any] | None) -> int:
    """A deployment's replica count as the config states it: num_replicas, else the
    autoscaling lower bound, else Ray Serve's default of 1."""
    if deployment is None:
        return 1
    value = deployment.get("num_replicas")
    if isinstance(value, int):
        return value
    autoscaling = deployment.get("autoscaling_config")
    if isinstance(autoscaling, dict):
        return int(autoscaling.get("min_replicas", 1))
    return 1


def _worker_groups(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    groups = obj.get("spec", {}).get("rayClusterConfig", {}).get("workerGroupSpecs") or []
    return [g for g in groups if isinstance(g, dict)]


def observed_state(obj: Mapping[str, Any], fleet: FleetSpec, app_name: str) -> FleetState:
    """Replicas per pool from serveConfigV2 and nodes (minReplicas, the floor this actuator
    owns) per node pool from the worker groups named after them."""
    app = _application(serve_config(obj), app_name)
    deployments = {d.get("name"): d for d in app.get("deployments") or [] if isinstance(d, dict)}
    replicas = {p.name: _deployment_replicas(deployments.get(p.name)) for p in fleet.model_pools}
    groups = {g.get("groupName"): g for g in _worker_groups(obj)}
    nodes = {
        np.name: int(groups[np.name].get("minReplicas", 0))
        for np in fleet.node_pools
        if np.name in groups
    }
    return FleetState(replicas=replicas, nodes=nodes)


def patch_body(
    obj: Mapping[str, Any], fleet: FleetSpec, desired: FleetState, app_name: str
) -> dict[str, Any] | None:
    """The JSON merge patch that makes `obj` match `desired`; None when it already does."""
    config = serve_config(obj)
    app = _application(config, app_name)
    deployments = app.setdefault("deployments", [])
    serve_changed = False
    for pool, count in desired.replicas.items():
        entry = next((d for d in deployments if d.get("name") == pool), None)
        if entry is None:
            entry = {"name": pool}
            deployments.append(entry)
        if entry.get("num_replicas") != count or entry.get("autoscaling_config", "") is not None:
            # An explicit null, not an absent key: Ray Serve merges a config's deployment
            # options over the code's, so only null removes an autoscaling_config that the
            # application's code sets (application_state.override_deployment_info, Ray 2.60).
            entry["autoscaling_config"] = None
            entry["num_replicas"] = count
            serve_changed = True

    cluster = obj.get("spec", {}).get("rayClusterConfig", {})
    in_tree = bool(cluster.get("enableInTreeAutoscaling", False))
    groups = copy.deepcopy(_worker_groups(obj))
    groups_changed = False
    for node_pool, count in desired.nodes.items():
        group = next((g for g in groups if g.get("groupName") == node_pool), None)
        if group is None:
            raise ActuatorError(
                f"the RayService has no worker group named {node_pool!r} (one per node pool)"
            )
        current = int(group.get("replicas", group.get("minReplicas", 0)))
        # `replicas` only ever goes up here. Lowering it makes KubeRay delete pods: chosen by
        # the Ray autoscaler (idle nodes only) when in-tree autoscaling is on, but at random
        # when it is off (raycluster_controller.go, reconcilePods), which could take a node
        # whose replicas still serve. Lowering minReplicas lets the Ray autoscaler do it safely.
        if count < current and not in_tree:
            log.warning(
                "worker group %s: plan needs %d nodes, %d run; enable in-tree autoscaling so "
                "idle nodes are released (KubeRay would delete pods at random)",
                node_pool,
                count,
                current,
            )
        wanted = {
            "minReplicas": count,
            "maxReplicas": max(count, fleet.node_pool(node_pool).max_nodes),
            "replicas": max(current, count),
        }
        for key, value in wanted.items():
            if group.get(key) != value:
                group[key] = value
                groups_changed = True

    if not serve_changed and not groups_changed:
        return None
    spec: dict[str, Any] = {}
    if serve_changed:
        spec["serveConfigV2"] = yaml.safe_dump(config, sort_keys=False)
    if groups_changed:
        spec["rayClusterConfig"] = {"workerGroupSpecs": groups}
    version = obj.get("metadata", {}).get("resourceVersion")
    metadata = {"resourceVersion": version} if version else {}
    return {"metadata": metadata, "spec": spec}


class KubernetesActuator:
    """Reads and patches one RayService (get + patch on rayservices.ray.io in `namespace`)."""

    manages_nodes = True

    def __init__(
        self,
        fleet: FleetSpec,
        namespace: str,
        name: str,
        *,
        api: Any | None = None,
        app_name: str = FLEET_APP_NAME,
        max_attempts: int = 5,
    ) -> None:
        self.fleet = fleet
        self.namespace = namespace
        self.name = name
        self.app_name = app_name
        self.max_attempts = max_attempts
        self.api = api if api is not None else _default_api()

    def _get(self) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except ApiException as exc:
            raise self._error("get", exc) from exc
        if not isinstance(obj, dict):
            raise ActuatorError(f"unexpected answer reading RayService {self._where}")
        return obj

    @property
    def _where(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _error(self, verb: str, exc: Any) -> ActuatorError:
        status = getattr(exc, "status", None)
        if status == 404:
            return ActuatorError(f"RayService {self._where} not found")
        if status in (401, 403):
            return ActuatorError(
                f"not allowed to {verb} RayService {self._where}: the service account needs "
                f"get and patch on rayservices.ray.io in namespace {self.namespace} "
                "(docs/autoscaler.md, RBAC)"
            )
        return ActuatorError(f"{verb} RayService {self._where} failed: HTTP {status} {exc}")

    def observe(self) -> FleetState:
        """Replicas per pool and node floors per node pool, as the RayService states them."""
        return observed_state(self._get(), self.fleet, self.app_name)

    def apply(self, desired: FleetState) -> None:
        """Patch the RayService to `desired`; on 409 Conflict read again and retry."""
        from kubernetes.client.exceptions import ApiException

        for attempt in range(1, self.max_attempts + 1):
            body = patch_body(self._get(), self.fleet, desired, self.app_name)
            if body is None:
                return
            try:
                self.api.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    self.name,
                    body,
                    field_manager=FIELD_MANAGER,
                    _content_type=MERGE_PATCH,
                )
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise self._error("patch", exc) from exc
                log.info(
                    "RayService %s changed meanwhile (attempt %d); re-reading", self._where, attempt
                )
        raise ActuatorError(
            f"RayService {self._where} kept changing: {self.max_attempts} patches conflicted"
        )


def _default_api() -> Any:
    """CustomObjectsApi from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except ConfigException:
        try:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        except (ConfigException, OSError) as exc:
            raise ActuatorError(
                f"no Kubernetes credentials: not in a cluster and no usable kubeconfig ({exc})"
            ) from exc
    return client.CustomObjectsApi()
