"""The Kubernetes actuator against the official client, with the API server replaced.

No Kubernetes API server can run on this machine, so `FakeApiServer` STANDS IN FOR THE API
SERVER: it sits below the real `kubernetes` client (an ApiClient whose `call_api` answers
instead of the network), keeps a RayService and its active RayCluster, answers GET, applies
JSON merge patches (RFC 7386) with resourceVersion checks (409 on a stale version, as the API
server does), and records every request exactly as the client would have sent it. The patched
objects are then checked against the KubeRay CRD schemas and each serveConfigV2 against Ray
2.60's Serve config schema (helm/schemas/kuberay/).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema
import pytest
import urllib3
import yaml
from kubernetes import client
from kubernetes.client import rest

from gemma_fleet.autoscaler.actuators import ActuatorError, FleetState
from gemma_fleet.autoscaler.actuators.kubernetes import (
    REQUEST_TIMEOUT_S,
    KubernetesActuator,
    observed_state,
)
from gemma_fleet.autoscaler.controller import Controller
from gemma_fleet.autoscaler.metrics_source import DemandReading, PoolTraffic
from gemma_fleet.autoscaler.plan import ModelDemand, Plan
from gemma_fleet.autoscaler.settings import ControllerSettings, SmoothingSettings
from gemma_fleet.deployments.pools import FleetSpec, default_fleet_path, load_fleet

SCHEMAS = Path(__file__).resolve().parents[2] / "helm" / "schemas" / "kuberay"
RAYSERVICE_SCHEMA = json.loads((SCHEMAS / "rayservice_v1.json").read_text())
RAYCLUSTER_SCHEMA = json.loads((SCHEMAS / "raycluster_v1.json").read_text())
SERVE_SCHEMA = json.loads((SCHEMAS / "serve_config_ray2.60.0.json").read_text())
NS, NAME, CLUSTER = "fleet", "demo-gemma-fleet", "demo-gemma-fleet-x7k2p"
PATH = f"/apis/ray.io/v1/namespaces/{NS}/rayservices/{NAME}"
CLUSTER_PATH = f"/apis/ray.io/v1/namespaces/{NS}/rayclusters/{CLUSTER}"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: mappings merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    timeout: Any = None


@dataclass
class FakeApiServer:
    """Stands in for the Kubernetes API server (see module docstring)."""

    objects: dict[str, dict[str, Any]]  # by API path
    requests: list[Request] = field(default_factory=list)
    status_for: Callable[[Request], int | None] = lambda r: None  # force an error status
    before_patch: Callable[[FakeApiServer], None] | None = None  # another writer, racing us

    @property
    def obj(self) -> dict[str, Any]:
        """The RayService."""
        return self.objects[PATH]

    @property
    def cluster(self) -> dict[str, Any]:
        """The active RayCluster."""
        return self.objects[CLUSTER_PATH]

    def bump(self, path: str = PATH) -> None:
        meta = self.objects[path]["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    def handle(
        self, method: str, url: str, headers: dict[str, str], body: Any, timeout: Any
    ) -> rest.RESTResponse:
        parsed = urlparse(url)
        request = Request(method, parsed.path, parse_qs(parsed.query), dict(headers), body, timeout)
        self.requests.append(request)
        forced = self.status_for(request)
        if forced is not None:
            return self._answer(forced, {"kind": "Status", "code": forced})
        obj = self.objects.get(parsed.path)
        if obj is None:
            return self._answer(404, {"kind": "Status", "code": 404})
        if method == "GET":
            return self._answer(200, obj)
        if method == "PATCH":
            if self.before_patch is not None:
                self.before_patch(self)
                obj = self.objects[parsed.path]
            assert headers["Content-Type"] == "application/merge-patch+json"
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                return self._answer(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
            patched = merge_patch(obj, body)
            patched["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
            if patched.get("spec") != obj.get("spec") and "generation" in obj["metadata"]:
                # As for any custom resource with a status subresource: a spec change is a
                # new generation, which the operator acknowledges in status.observedGeneration.
                patched["metadata"]["generation"] = obj["metadata"]["generation"] + 1
            self.objects[parsed.path] = patched
            self.bump(parsed.path)
            return self._answer(200, patched)
        return self._answer(405, {"kind": "Status", "code": 405})

    @staticmethod
    def _answer(status: int, payload: Any) -> rest.RESTResponse:
        raw = urllib3.HTTPResponse(
            body=json.dumps(payload).encode(),
            status=status,
            reason="OK" if status == 200 else "Error",
            headers={"Content-Type": "application/json"},
            preload_content=True,
        )
        return rest.RESTResponse(raw)


class FakeServerApiClient(client.ApiClient):
    """The real ApiClient (serialisation, headers, error mapping), answered by FakeApiServer."""

    def __init__(self, server: FakeApiServer) -> None:
        configuration = client.Configuration(host="https://kubernetes.invalid")
        super().__init__(configuration)
        self.server = server

    def call_api(
        self,
        method: str,
        url: str,
        header_params: dict[str, str] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> rest.RESTResponse:
        return self.server.handle(method, url, header_params or {}, body, _request_timeout)


@pytest.fixture
def fleet() -> FleetSpec:
    return load_fleet(default_fleet_path())


def container(name: str) -> dict[str, Any]:
    return {"name": name, "image": "ghcr.io/example/gemma-fleet:1.0"}


def rayservice(fleet: FleetSpec, *, in_tree: bool = False) -> dict[str, Any]:
    """A RayService as the Helm chart would render it: one worker group per node pool, Serve
    autoscaling bounds from the fleet file on every pool deployment; KubeRay has made its
    cluster (CLUSTER, see `raycluster`)."""
    serve = {
        "applications": [
            {
                "name": "gemma-fleet",
                "import_path": "gemma_fleet.gateway.fleet:app",
                "route_prefix": "/",
                "deployments": [
                    {
                        "name": p.name,
                        "autoscaling_config": {
                            "min_replicas": p.replicas.min,
                            "max_replicas": p.replicas.max,
                        },
                    }
                    for p in fleet.model_pools
                ],
            }
        ]
    }
    groups = [
        {
            "groupName": np.name,
            "replicas": np.min_nodes,
            "minReplicas": np.min_nodes,
            "maxReplicas": np.max_nodes,
            "rayStartParams": {"resources": f'"{{\\"{np.resource}\\": {np.gpus_per_node}}}"'},
            "template": {"spec": {"containers": [container("ray-worker")]}},
        }
        for np in fleet.node_pools
    ]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "100", "generation": 1},
        "spec": {
            "serveConfigV2": "# rendered by the chart\n" + yaml.safe_dump(serve, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "enableInTreeAutoscaling": in_tree,
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [container("ray-head")]}},
                },
                "workerGroupSpecs": groups,
            },
        },
        "status": {"observedGeneration": 1, "activeServiceStatus": {"rayClusterName": CLUSTER}},
    }


def kuberay_reports(
    server: FakeApiServer, statuses: dict[str, str], *, seen_latest_spec: bool = True
) -> None:
    """Write the RayService status as KubeRay's reconcile does: the Serve deployment
    statuses it read from the dashboard, and the generation of the spec it had read."""
    meta, status = server.obj["metadata"], server.obj["status"]
    if seen_latest_spec:
        status["observedGeneration"] = meta["generation"]
    status["activeServiceStatus"]["applicationStatuses"] = {
        "gemma-fleet": {
            "status": "RUNNING",
            "serveDeploymentStatuses": {
                pool: {"status": state, "message": ""} for pool, state in statuses.items()
            },
        }
    }
    server.bump()


def raycluster(service: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster KubeRay makes from a RayService: its rayClusterConfig as the spec."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": CLUSTER, "namespace": NS, "resourceVersion": "500"},
        "spec": copy.deepcopy(service["spec"]["rayClusterConfig"]),
    }


def api_server(service: dict[str, Any], **kwargs: Any) -> FakeApiServer:
    """The RayService and, when its status names one, its active RayCluster."""
    objects = {PATH: service}
    if service.get("status", {}).get("activeServiceStatus", {}).get("rayClusterName"):
        objects[CLUSTER_PATH] = raycluster(service)
    return FakeApiServer(objects, **kwargs)


def actuator_for(server: FakeApiServer, fleet: FleetSpec) -> KubernetesActuator:
    api = client.CustomObjectsApi(FakeServerApiClient(server))
    return KubernetesActuator(fleet, NS, NAME, api=api)


def assert_valid(server: FakeApiServer) -> dict[str, Any]:
    """The objects against the KubeRay CRD schemas, the serveConfigV2 against Ray's; returns
    the parsed serve config."""
    jsonschema.validate(server.obj, RAYSERVICE_SCHEMA)
    if CLUSTER_PATH in server.objects:
        jsonschema.validate(server.cluster, RAYCLUSTER_SCHEMA)
    config = yaml.safe_load(server.obj["spec"]["serveConfigV2"])
    jsonschema.validate(config, SERVE_SCHEMA)
    return dict(config)


def deployments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in config["applications"][0]["deployments"]}


def groups(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A RayCluster's worker groups by name."""
    return {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}


def test_fixture_objects_are_valid(fleet: FleetSpec) -> None:
    # The starting objects themselves must pass the schemas, or later checks prove nothing.
    assert_valid(api_server(rayservice(fleet)))


def test_observe_reads_serve_replicas_and_the_active_clusters_floors(fleet: FleetSpec) -> None:
    server = api_server(rayservice(fleet))
    groups(server.cluster)["h100"]["minReplicas"] = 2  # the cluster's floor, not the template's
    state = actuator_for(server, fleet).observe()
    assert state.replicas == {p.name: p.replicas.min for p in fleet.model_pools}
    assert state.nodes == {"l4": 1, "h100": 2}
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", PATH),
        ("GET", CLUSTER_PATH),
    ]
    # Every call carries a timeout, so a hung API server fails the step instead of stalling it.
    assert all(r.timeout == REQUEST_TIMEOUT_S for r in server.requests)


def test_serving_replicas_come_from_the_serve_statuses_kuberay_reports(fleet: FleetSpec) -> None:
    server = api_server(rayservice(fleet))
    actuator = actuator_for(server, fleet)
    targets = {"gemma-4-e2b": 3, "gemma-4-e4b": 2, "gemma-4-26b-a4b": 1, "gemma-4-31b": 1}
    actuator.apply(FleetState(replicas=targets))
    # Just written: KubeRay has reported nothing about these targets, so none counts serving.
    assert actuator.observe().serving == dict.fromkeys(targets, 0)
    states = {
        "gemma-4-e2b": "HEALTHY",  # every replica of the target runs
        "gemma-4-e4b": "UPSCALING",  # the second replica waits for a GPU, or loads
        "gemma-4-26b-a4b": "DOWNSCALING",  # the target runs, extra replicas drain
        "gemma-4-31b": "UNHEALTHY",
    }
    # Statuses KubeRay read before it saw the latest spec could predate the new targets.
    kuberay_reports(server, states, seen_latest_spec=False)
    assert actuator.observe().serving == dict.fromkeys(targets, 0)
    kuberay_reports(server, states)
    assert actuator.observe().serving == {
        "gemma-4-e2b": 3,
        "gemma-4-e4b": 0,
        "gemma-4-26b-a4b": 1,
        "gemma-4-31b": 0,
    }
    assert_valid(server)  # the status as written matches KubeRay's CRD


RELAYOUT_FLEET = FleetSpec.model_validate(
    {
        "node_pools": [
            {"name": "l4", "gpu": "L4", "gpus_per_node": 2, "max_nodes": 4, "cost_per_gpu_hour": 1},
            {
                "name": "h100",
                "gpu": "H100-80GB",
                "gpus_per_node": 1,
                "max_nodes": 2,
                "cost_per_gpu_hour": 4,
            },
        ],
        "model_pools": [
            {"name": p, "model": "gemma-4-E4B", "node_pool": n, "replicas": {"min": 0, "max": 4}}
            for p, n in (("e4b-l4", "l4"), ("e4b-h100", "h100"))
        ],
    }
)


def test_a_relayout_keeps_the_old_pool_until_the_new_one_serves() -> None:
    """The plan moves the model from H100 to L4, whose replicas wait for GPU nodes far longer
    than `replica_start_s`: the H100 replica stays until KubeRay reports the L4 pool HEALTHY.
    (Before, it went `replica_start_s` after the L4 target was written, leaving the model with
    no replica at all while the L4 nodes came up.)"""
    fleet = RELAYOUT_FLEET
    server = api_server(rayservice(fleet))
    actuator = actuator_for(server, fleet)
    actuator.apply(FleetState(replicas={"e4b-l4": 0, "e4b-h100": 1}))
    kuberay_reports(server, {"e4b-l4": "HEALTHY", "e4b-h100": "HEALTHY"})
    clock = [0.0]
    controller = Controller(
        fleet,
        lambda demand: Plan(replicas={"e4b-l4": 3, "e4b-h100": 0}, nodes={}, cost_per_hour=0.0),
        OneReading(fleet, {"gemma-4-E4B": 1.0}),
        actuator,
        ControllerSettings(
            scale_down_delay_s=0,
            min_replica_lifetime_s=0,
            replica_start_s=120,
            headroom=0.0,
            # A level that settles within a minute: a young one holds every scale-down of its
            # model (hysteresis.py), and this test is about the L4 pool's health alone.
            smoothing=SmoothingSettings(level_half_life_s=30.0, trend_half_life_s=30.0),
        ),
        clock=lambda: clock[0],
    )

    def step() -> dict[str, int]:
        controller.step()
        clock[0] += 30
        return dict(observed_state(server.obj, fleet, "gemma-fleet").replicas)

    assert step() == {"e4b-l4": 3, "e4b-h100": 1}  # make before break
    for _ in range(20):  # ten minutes of the L4 pool waiting for its nodes
        kuberay_reports(server, {"e4b-l4": "UPSCALING", "e4b-h100": "HEALTHY"})
        assert step() == {"e4b-l4": 3, "e4b-h100": 1}
    held = next(d for d in controller.step().decisions if d.pool == "e4b-h100")
    assert "e4b-l4 of the same model still loading (0 of 3 serving)" in held.reason
    kuberay_reports(server, {"e4b-l4": "HEALTHY", "e4b-h100": "HEALTHY"})
    assert step() == {"e4b-l4": 3, "e4b-h100": 0}
    assert_valid(server)


def test_apply_patches_the_cluster_floors_and_the_serve_config(fleet: FleetSpec) -> None:
    server = api_server(rayservice(fleet))
    template_groups = copy.deepcopy(server.obj["spec"]["rayClusterConfig"]["workerGroupSpecs"])
    desired = FleetState(
        replicas={"gemma-4-e2b": 3, "gemma-4-e4b": 1, "gemma-4-26b-a4b": 2, "gemma-4-31b": 1},
        nodes={"l4": 2, "h100": 1},
    )
    actuator_for(server, fleet).apply(desired)

    patches = [r for r in server.requests if r.method == "PATCH"]
    # Nodes first (room for new replicas is asked for sooner), then the replicas.
    assert [p.path for p in patches] == [CLUSTER_PATH, PATH]
    for patch in patches:
        assert patch.headers["Content-Type"] == "application/merge-patch+json"
        assert patch.query["fieldManager"] == ["gemma-fleet-autoscaler"]
        assert patch.timeout == REQUEST_TIMEOUT_S
    to_cluster, to_service = patches
    assert to_cluster.body["metadata"] == {"resourceVersion": "500"}
    assert set(to_cluster.body["spec"]) == {"workerGroupSpecs"}
    assert to_service.body["metadata"] == {"resourceVersion": "100"}
    # Only the serve config on the RayService: KubeRay would not pass its worker groups'
    # replica counts on to the running cluster.
    assert set(to_service.body["spec"]) == {"serveConfigV2"}
    assert server.obj["spec"]["rayClusterConfig"]["workerGroupSpecs"] == template_groups

    config = assert_valid(server)
    deps = deployments(config)
    assert {n: d["num_replicas"] for n, d in deps.items()} == desired.replicas
    # Explicitly null: that (not a missing key) overrides an autoscaling_config set in code.
    assert all(d["autoscaling_config"] is None for d in deps.values())
    g = groups(server.cluster)
    assert (g["l4"]["replicas"], g["l4"]["minReplicas"], g["l4"]["maxReplicas"]) == (2, 2, 4)
    assert (g["h100"]["replicas"], g["h100"]["minReplicas"], g["h100"]["maxReplicas"]) == (1, 1, 2)
    # The rest of each group survives the list replacement untouched.
    assert g["l4"]["template"]["spec"]["containers"][0]["name"] == "ray-worker"
    assert "gpu_pool_l4" in g["l4"]["rayStartParams"]["resources"]
    # And reading it back gives what was applied.
    observed = actuator_for(server, fleet).observe()
    assert (observed.replicas, observed.nodes) == (desired.replicas, desired.nodes)


def test_before_kuberay_made_a_cluster_floors_wait_and_replicas_land(fleet: FleetSpec) -> None:
    service = rayservice(fleet)
    del service["status"]
    server = api_server(service)
    desired = FleetState(replicas={"gemma-4-e2b": 2}, nodes={"l4": 3})
    actuator_for(server, fleet).apply(desired)
    assert [r.path for r in server.requests if r.method == "PATCH"] == [PATH]
    state = actuator_for(server, fleet).observe()
    assert state.replicas["gemma-4-e2b"] == 2
    # What KubeRay will create the cluster with.
    assert state.nodes == {np.name: np.min_nodes for np in fleet.node_pools}
    assert_valid(server)


def test_a_pool_at_zero_is_written_as_serve_accepts_it(fleet: FleetSpec) -> None:
    """Serve's config refuses num_replicas: 0; a pool going to zero gets autoscaling bounds
    0..1 starting at 0 instead, which Ray Serve 2.60's own override step turns into no
    replica, and reads back as 0. Back above zero it is a fixed count again."""
    server = api_server(rayservice(fleet))
    actuator = actuator_for(server, fleet)
    zero = {p.name: (0 if p.name == "gemma-4-e4b" else 1) for p in fleet.model_pools}
    actuator.apply(FleetState(replicas=zero))
    config = assert_valid(server)
    assert deployments(config)["gemma-4-e4b"] == {
        "name": "gemma-4-e4b",
        "autoscaling_config": {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1},
    }
    assert actuator.observe().replicas == zero
    applied = serve_applied(server.obj, fleet)
    # With an autoscaling config Serve starts a changed deployment at its initial_replicas and
    # leaves num_replicas aside (autoscaling_state.register, Ray 2.60).
    assert applied["gemma-4-e4b"][1] == (0, 0, 1)
    assert applied["gemma-4-e2b"] == (1, None)

    back = {**zero, "gemma-4-e4b": 2}
    actuator.apply(FleetState(replicas=back))
    assert deployments(assert_valid(server))["gemma-4-e4b"] == {
        "name": "gemma-4-e4b",
        "autoscaling_config": None,
        "num_replicas": 2,
    }
    assert serve_applied(server.obj, fleet)["gemma-4-e4b"] == (2, None)
    assert actuator.observe().replicas == back


def test_applying_the_observed_state_sends_no_patch(fleet: FleetSpec) -> None:
    server = api_server(rayservice(fleet))
    actuator = actuator_for(server, fleet)
    desired = FleetState(
        replicas={p.name: 2 for p in fleet.model_pools}, nodes={"l4": 2, "h100": 2}
    )
    actuator.apply(desired)
    versions = [o["metadata"]["resourceVersion"] for o in server.objects.values()]
    actuator.apply(desired)
    assert [r.method for r in server.requests].count("PATCH") == 2
    assert [o["metadata"]["resourceVersion"] for o in server.objects.values()] == versions


def test_conflict_rereads_and_reapplies_keeping_the_other_writers_change(
    fleet: FleetSpec,
) -> None:
    server = api_server(rayservice(fleet, in_tree=True))
    raced: list[bool] = []

    def ray_autoscaler(s: FakeApiServer) -> None:
        # The Ray autoscaler scales the cluster between our read and our patch, once.
        if not raced:
            groups(s.cluster)["h100"]["replicas"] = 2
            groups(s.cluster)["h100"]["scaleStrategy"] = {"workersToDelete": ["w-1"]}
            s.bump(CLUSTER_PATH)
            raced.append(True)

    server.before_patch = ray_autoscaler
    desired = FleetState(replicas={"gemma-4-e2b": 2}, nodes={"l4": 1, "h100": 2})
    actuator_for(server, fleet).apply(desired)

    cluster_calls = [r for r in server.requests if r.path == CLUSTER_PATH]
    assert [r.method for r in cluster_calls] == ["GET", "PATCH", "GET", "PATCH"]
    assert cluster_calls[1].body["metadata"]["resourceVersion"] == "500"
    assert cluster_calls[3].body["metadata"]["resourceVersion"] == "501"
    assert_valid(server)
    g = groups(server.cluster)
    # Their edit was not overwritten, and ours landed.
    assert g["h100"]["scaleStrategy"] == {"workersToDelete": ["w-1"]}
    assert (g["h100"]["minReplicas"], g["h100"]["replicas"]) == (2, 2)
    assert (
        deployments(yaml.safe_load(server.obj["spec"]["serveConfigV2"]))["gemma-4-e2b"][
            "num_replicas"
        ]
        == 2
    )


def test_endless_conflicts_give_up_with_a_clear_error(fleet: FleetSpec) -> None:
    server = api_server(rayservice(fleet))
    server.before_patch = FakeApiServer.bump
    with pytest.raises(ActuatorError, match=r"RayService .* kept changing: 5 patches conflicted"):
        actuator_for(server, fleet).apply(FleetState(replicas={"gemma-4-e2b": 2}))


def test_forbidden_names_the_rbac_needed(fleet: FleetSpec) -> None:
    server = api_server(rayservice(fleet), status_for=lambda r: 403)
    with pytest.raises(
        ActuatorError, match=r"needs get and patch on rayservices\.ray\.io and rayclusters"
    ):
        actuator_for(server, fleet).observe()
    # Allowed on the RayService but not on its cluster (an older Role): the cluster is named.
    server = api_server(
        rayservice(fleet), status_for=lambda r: 403 if r.path == CLUSTER_PATH else None
    )
    with pytest.raises(ActuatorError, match=f"not allowed to get RayCluster {NS}/{CLUSTER}"):
        actuator_for(server, fleet).observe()


def test_missing_objects_and_missing_worker_group_are_named(fleet: FleetSpec) -> None:
    server = api_server(rayservice(fleet), status_for=lambda r: 404)
    with pytest.raises(ActuatorError, match=f"RayService {NS}/{NAME} not found"):
        actuator_for(server, fleet).observe()
    server = api_server(rayservice(fleet))
    server.cluster["spec"]["workerGroupSpecs"].pop()  # no h100 group
    with pytest.raises(ActuatorError, match="no worker group named 'h100'"):
        actuator_for(server, fleet).apply(FleetState(replicas={}, nodes={"h100": 1}))


def test_an_unreachable_api_server_is_one_clear_error(fleet: FleetSpec) -> None:
    # A real client against a port nothing listens on: the error names what could not be
    # reached, and no traceback of urllib3's retries reaches the operator.
    configuration = client.Configuration(host="http://127.0.0.1:9")
    configuration.retries = 0
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    actuator = KubernetesActuator(fleet, NS, NAME, api=api)
    with pytest.raises(ActuatorError, match="cannot reach the Kubernetes API server to get"):
        actuator.observe()


@pytest.mark.parametrize("in_tree", [True, False])
def test_worker_replicas_are_never_lowered_only_the_floor(fleet: FleetSpec, in_tree: bool) -> None:
    server = api_server(rayservice(fleet, in_tree=in_tree))
    groups(server.cluster)["l4"].update(replicas=3, minReplicas=3)
    actuator_for(server, fleet).apply(FleetState(replicas={}, nodes={"l4": 1}))
    g = groups(server.cluster)["l4"]
    # The floor comes down; the node itself is left for the Ray autoscaler to remove once idle
    # (KubeRay would delete a random pod if replicas dropped with in-tree autoscaling off).
    assert (g["minReplicas"], g["replicas"]) == (1, 3)
    assert_valid(server)
    # Growing raises both at once.
    actuator_for(server, fleet).apply(FleetState(replicas={}, nodes={"l4": 4}))
    g = groups(server.cluster)["l4"]
    assert (g["minReplicas"], g["replicas"], g["maxReplicas"]) == (4, 4, 4)


class OneReading:
    """A demand source that always reports the same complete reading (synthetic)."""

    def __init__(self, fleet: FleetSpec, rates: dict[str, float]) -> None:
        self.fleet = fleet
        self.rates = rates
        self.t = 0.0

    def read(self) -> DemandReading:
        self.t += 30
        return DemandReading(
            at=self.t,
            pools={
                p.name: PoolTraffic(requests_per_s=0.0, running=0.0) for p in self.fleet.model_pools
            },
            demand={m: ModelDemand(r, 1000, 200) for m, r in self.rates.items()},
            complete=True,
        )


def test_controller_step_patches_the_rayservice_and_stays_idempotent(fleet: FleetSpec) -> None:
    pools = {p.model: p.name for p in fleet.model_pools}

    def planner(demand: dict[str, ModelDemand]) -> Plan:
        return Plan(
            replicas={pools[m]: int(d.requests_per_s // 1) + 1 for m, d in demand.items()},
            nodes={},
            cost_per_hour=0.0,
        )

    server = api_server(rayservice(fleet))
    # Rates half-way between the planner's steps: the first reading's discount (a young
    # level's rise counts only past its unsettled noise, stabilise.py; 15-25% here) does not
    # move them across one.
    rates = {"gemma-4-E2B": 2.5, "gemma-4-E4B": 0.0, "gemma-4-26B-A4B": 0.0, "gemma-4-31B": 1.5}
    controller = Controller(
        fleet,
        planner,  # type: ignore[arg-type]
        OneReading(fleet, rates),
        actuator_for(server, fleet),
        ControllerSettings(headroom=0.0),
        clock=lambda: 0.0,
    )
    report = controller.step()
    assert report.applied
    state = observed_state(server.obj, fleet, "gemma-fleet", server.cluster)
    assert state.replicas["gemma-4-e2b"] == 3 and state.replicas["gemma-4-31b"] == 2
    # Two 31B TP=2 replicas and one 26B take 5 H100 GPUs: two 4-GPU nodes.
    assert state.nodes == {"l4": 2, "h100": 2}
    assert_valid(server)
    patches = sum(r.method == "PATCH" for r in server.requests)
    assert not controller.step().applied
    assert sum(r.method == "PATCH" for r in server.requests) == patches


def serve_applied(
    service: dict[str, Any], fleet: FleetSpec
) -> dict[str, tuple[int | None, tuple[int, int | None, int] | None]]:
    """What Ray Serve 2.60 makes of a RayService's serveConfigV2 (its own override step of a
    declarative deploy, `application_state.override_deployment_info`) for pool deployments
    whose code sets an autoscaling_config, as serve_app.py's do: per pool, the fixed replica
    count and the (min, initial, max) of Serve's own autoscaling, where it has one."""
    from ray import serve
    from ray.serve._private.application_state import override_deployment_info
    from ray.serve._private.deployment_info import DeploymentInfo
    from ray.serve.schema import ServeDeploySchema

    def from_code(name: str) -> DeploymentInfo:
        @serve.deployment(name=name, autoscaling_config={"min_replicas": 1, "max_replicas": 4})
        class Pool:
            pass

        # serve.deployment's stubs give a decorated class its own type, not Deployment's.
        return DeploymentInfo(
            deployment_config=Pool._deployment_config,  # type: ignore[attr-defined]
            replica_config=Pool._replica_config,  # type: ignore[attr-defined]
            start_time_ms=0,
            deployer_job_id="test",
        )

    config = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    (app,) = config.applications
    infos = {p.name: from_code(p.name) for p in fleet.model_pools}
    out = {}
    for name, info in override_deployment_info(infos, app).items():
        auto = info.deployment_config.autoscaling_config
        bounds = (
            None if auto is None else (auto.min_replicas, auto.initial_replicas, auto.max_replicas)
        )
        out[name] = (info.deployment_config.num_replicas, bounds)
    return out


def test_patched_serve_config_overrides_autoscaling_set_in_code(fleet: FleetSpec) -> None:
    """Each pool ends with the patched fixed replica count and no Serve autoscaling; without
    the explicit null the code's autoscaling would stay."""
    before = rayservice(fleet)
    # The chart's form without the null: num_replicas next to autoscaling set in code.
    config = yaml.safe_load(before["spec"]["serveConfigV2"])
    for d in config["applications"][0]["deployments"]:
        d.pop("autoscaling_config")
        d["num_replicas"] = 2
    before["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    assert all(bounds is not None for _, bounds in serve_applied(before, fleet).values())

    server = api_server(before)
    actuator_for(server, fleet).apply(FleetState(replicas={p.name: 3 for p in fleet.model_pools}))
    assert serve_applied(server.obj, fleet) == {p.name: (3, None) for p in fleet.model_pools}
