"""Apply the controller's decisions to a KubeRay RayService with the official client.

Two objects are written, each with one JSON merge patch carrying its resourceVersion:

- The RayService's `spec.serveConfigV2` (a YAML string): in the application named
  FLEET_APP_NAME, each pool deployment gets `num_replicas: N` and `autoscaling_config: null` -
  Ray Serve refuses a number next to an autoscaling config, and two autoscalers on one
  deployment would fight. Serve's config cannot say `num_replicas: 0` (it must be positive), so
  a pool at zero gets `autoscaling_config: {min_replicas: 0, initial_replicas: 0,
  max_replicas: 1}` instead: no replica, and a request pinned to that pool starts one rather
  than failing. The whole string is rewritten, so YAML comments in it do not survive the first
  change.
- The worker groups of the RayService's active RayCluster (`status.activeServiceStatus.
  rayClusterName`), the group named after each node pool: `minReplicas` = the nodes the plan
  needs, `maxReplicas` = the node pool's `max_nodes`, and `replicas` raised to at least
  `minReplicas` - never lowered: KubeRay deletes pods when it drops, at random unless in-tree
  autoscaling is on. With `enableInTreeAutoscaling: true`, lowering `minReplicas` lets the Ray
  autoscaler remove nodes once they are idle, so no node that still hosts a serving or draining
  replica goes away; with it off, idle nodes stay (and a warning says so). Not the RayService's
  own worker groups: KubeRay leaves a running cluster alone when only their replica counts
  change (it hashes the spec without them), so a floor written there would never land. A
  cluster KubeRay creates later (an upgrade) starts from the RayService's groups, and the next
  step writes the floors onto it.

Replicas that serve are read, never written, from the Serve deployment statuses in the
RayService's status (`serving_replicas`): the controller holds a model's old replicas in a
re-layout until the new pool serves, not merely until its target was written.

A merge patch replaces lists whole, so a RayCluster patch carries the complete workerGroupSpecs
list as read; the resourceVersion makes the API server refuse it (409 Conflict) if anything (the
Ray autoscaler, KubeRay) changed the object in between, and the actuator then reads again and
rebuilds the patch.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from gemma_fleet.autoscaler.actuators import ActuatorError, FleetState
from gemma_fleet.deployments.pools import FleetSpec
from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME

log = logging.getLogger(__name__)

GROUP = "ray.io"
VERSION = "v1"
RAYSERVICES = "rayservices"
RAYCLUSTERS = "rayclusters"
FIELD_MANAGER = "gemma-fleet-autoscaler"
MERGE_PATCH = "application/merge-patch+json"
# Seconds one API call may take (connect, read): a hung API server fails the step, which is
# retried on the next interval, instead of stalling the controller.
REQUEST_TIMEOUT_S = 15.0
# Serve deployment states in which every replica of the target runs (Ray 2.60's
# DeploymentStatus; DOWNSCALING: the target is met and extra replicas are stopping).
SETTLED = frozenset({"HEALTHY", "DOWNSCALING"})
# How a pool at zero replicas is written (Serve's config refuses num_replicas: 0).
AT_ZERO = {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1}


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


def _deployment_options(count: int) -> dict[str, Any]:
    """The options that pin a deployment at `count` replicas in a serve config."""
    if count == 0:
        return {"autoscaling_config": dict(AT_ZERO)}
    # An explicit null, not an absent key: Ray Serve merges a config's deployment options over
    # the code's, so only null removes an autoscaling_config that the application's code sets
    # (application_state.override_deployment_info, Ray 2.60).
    return {"num_replicas": count, "autoscaling_config": None}


def _worker_groups(cluster_spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The worker groups of a RayCluster spec (a RayCluster's `spec`, a RayService's
    `spec.rayClusterConfig`)."""
    groups = cluster_spec.get("workerGroupSpecs") or []
    return [g for g in groups if isinstance(g, dict)]


def active_cluster_name(service: Mapping[str, Any]) -> str | None:
    """The RayCluster that serves now, as the RayService's status names it (None before
    KubeRay has made one)."""
    name = service.get("status", {}).get("activeServiceStatus", {}).get("rayClusterName")
    return name if isinstance(name, str) and name else None


def observed_state(
    service: Mapping[str, Any],
    fleet: FleetSpec,
    app_name: str,
    cluster: Mapping[str, Any] | None = None,
) -> FleetState:
    """Replicas per pool from serveConfigV2, and nodes (minReplicas, the floor this actuator
    owns) per node pool from the worker groups named after them: the active RayCluster's, or
    the RayService's before there is one (what KubeRay will create it with)."""
    app = _application(serve_config(service), app_name)
    deployments = {d.get("name"): d for d in app.get("deployments") or [] if isinstance(d, dict)}
    replicas = {p.name: _deployment_replicas(deployments.get(p.name)) for p in fleet.model_pools}
    if cluster is not None:
        cluster_spec = cluster.get("spec", {})
    else:
        cluster_spec = service.get("spec", {}).get("rayClusterConfig", {})
    groups = {g.get("groupName"): g for g in _worker_groups(cluster_spec)}
    nodes = {
        np.name: int(groups[np.name].get("minReplicas", 0))
        for np in fleet.node_pools
        if np.name in groups
    }
    return FleetState(
        replicas=replicas, nodes=nodes, serving=serving_replicas(service, replicas, app_name)
    )


def serving_replicas(
    service: Mapping[str, Any], replicas: Mapping[str, int], app_name: str
) -> dict[str, int]:
    """Replicas per pool known to serve, from the Serve deployment statuses KubeRay copies
    into the RayService's status (`activeServiceStatus.applicationStatuses`).

    The status says HEALTHY (or DOWNSCALING) only once Ray Serve runs every replica of the
    deployment's target, so then all of `replicas[pool]` serve. Any other state (UPSCALING,
    UPDATING, UNHEALTHY) says nothing of how many serve, nor does a status KubeRay wrote
    before it saw the latest spec (`status.observedGeneration` behind
    `metadata.generation`); such a pool counts 0. That is the safe side: serving is read only
    to hold another pool's replicas until this one serves."""
    status = service.get("status") or {}
    generation = service.get("metadata", {}).get("generation")
    current = generation is None or status.get("observedGeneration") == generation
    apps = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    deployments = (apps.get(app_name) or {}).get("serveDeploymentStatuses") or {}
    out = {}
    for pool, count in replicas.items():
        state = (deployments.get(pool) or {}).get("status")
        out[pool] = count if current and state in SETTLED else 0
    return out


def serve_patch(
    service: Mapping[str, Any], replicas: Mapping[str, int], app_name: str
) -> dict[str, Any] | None:
    """The merge patch that gives the RayService's serve config `replicas`; None when it has
    them already."""
    config = serve_config(service)
    app = _application(config, app_name)
    deployments = app.setdefault("deployments", [])
    changed = False
    for pool, count in replicas.items():
        entry = next((d for d in deployments if d.get("name") == pool), None)
        if entry is None:
            entry = {"name": pool}
            deployments.append(entry)
        wanted = _deployment_options(count)
        current = {k: entry[k] for k in ("num_replicas", "autoscaling_config") if k in entry}
        if current != wanted:
            entry.pop("num_replicas", None)
            entry.update(wanted)
            changed = True
    if not changed:
        return None
    return _with_version(service, {"serveConfigV2": yaml.safe_dump(config, sort_keys=False)})


def nodes_patch(
    cluster: Mapping[str, Any], fleet: FleetSpec, nodes: Mapping[str, int]
) -> dict[str, Any] | None:
    """The merge patch that gives the RayCluster's worker groups the node floors `nodes`;
    None when it has them already."""
    spec = cluster.get("spec", {})
    in_tree = bool(spec.get("enableInTreeAutoscaling", False))
    groups = copy.deepcopy(_worker_groups(spec))
    changed = False
    for node_pool, count in nodes.items():
        group = next((g for g in groups if g.get("groupName") == node_pool), None)
        if group is None:
            name = cluster.get("metadata", {}).get("name")
            raise ActuatorError(
                f"RayCluster {name} has no worker group named {node_pool!r} (one per node pool)"
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
                changed = True
    return _with_version(cluster, {"workerGroupSpecs": groups}) if changed else None


def _with_version(obj: Mapping[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    version = obj.get("metadata", {}).get("resourceVersion")
    return {"metadata": {"resourceVersion": version} if version else {}, "spec": spec}


class KubernetesActuator:
    """Reads and patches one RayService and its active RayCluster (get + patch on
    rayservices.ray.io and rayclusters.ray.io in `namespace`)."""

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

    def _get(self, plural: str, name: str) -> dict[str, Any]:
        obj = self._call(
            "get",
            plural,
            name,
            lambda: self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name, _request_timeout=REQUEST_TIMEOUT_S
            ),
        )
        if not isinstance(obj, dict):
            raise ActuatorError(f"unexpected answer reading {_kind(plural)} {self._at(name)}")
        return obj

    def _at(self, name: str) -> str:
        return f"{self.namespace}/{name}"

    def _call(self, verb: str, plural: str, name: str, call: Callable[[], Any]) -> Any:
        """`call`, with what can go wrong turned into ActuatorError (409 Conflict excepted:
        the caller retries it)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except ApiException as exc:
            if exc.status == 409:
                raise
            raise self._error(verb, plural, name, exc) from exc
        except (HTTPError, OSError) as exc:
            raise ActuatorError(
                f"cannot reach the Kubernetes API server to {verb} {_kind(plural)} "
                f"{self._at(name)}: {exc}"
            ) from exc

    def _error(self, verb: str, plural: str, name: str, exc: Any) -> ActuatorError:
        status = getattr(exc, "status", None)
        what = f"{_kind(plural)} {self._at(name)}"
        if status == 404:
            return ActuatorError(f"{what} not found")
        if status in (401, 403):
            return ActuatorError(
                f"not allowed to {verb} {what}: the service account needs get and patch on "
                f"rayservices.ray.io and rayclusters.ray.io in namespace {self.namespace} "
                "(docs/autoscaler.md, RBAC)"
            )
        return ActuatorError(f"{verb} {what} failed: HTTP {status} {exc}")

    def _active_cluster(self, service: Mapping[str, Any]) -> dict[str, Any] | None:
        name = active_cluster_name(service)
        return None if name is None else self._get(RAYCLUSTERS, name)

    def observe(self) -> FleetState:
        """Replicas per pool as the RayService states them; node floors per node pool as its
        active RayCluster (else the RayService) states them."""
        service = self._get(RAYSERVICES, self.name)
        return observed_state(service, self.fleet, self.app_name, self._active_cluster(service))

    def apply(self, desired: FleetState) -> None:
        """Patch the active RayCluster's node floors, then the RayService's replicas (nodes
        first: room for new replicas is asked for sooner). On 409 Conflict read again and
        retry."""
        if desired.nodes:
            cluster = active_cluster_name(self._get(RAYSERVICES, self.name))
            if cluster is None:
                log.info(
                    "RayService %s has no active RayCluster yet: node floors wait for it",
                    self._at(self.name),
                )
            else:
                self._patch(
                    RAYCLUSTERS, cluster, lambda obj: nodes_patch(obj, self.fleet, desired.nodes)
                )
        self._patch(
            RAYSERVICES,
            self.name,
            lambda obj: serve_patch(obj, desired.replicas, self.app_name),
        )

    def _patch(
        self, plural: str, name: str, build: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        for attempt in range(1, self.max_attempts + 1):
            body = build(self._get(plural, name))
            if body is None:
                return
            send = functools.partial(
                self.api.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                plural,
                name,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            try:
                self._call("patch", plural, name, send)
                return
            except ApiException:  # only 409 Conflict comes through _call
                log.info(
                    "%s %s changed meanwhile (attempt %d); re-reading",
                    _kind(plural),
                    self._at(name),
                    attempt,
                )
        raise ActuatorError(
            f"{_kind(plural)} {self._at(name)} kept changing: "
            f"{self.max_attempts} patches conflicted"
        )


def _kind(plural: str) -> str:
    return {RAYSERVICES: "RayService", RAYCLUSTERS: "RayCluster"}.get(plural, plural)


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
