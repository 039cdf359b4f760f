"""The Kubernetes actuator against the official client, with the API server replaced.

No Kubernetes API server can run on this machine, so `FakeApiServer` STANDS IN FOR THE API
SERVER: it sits below the real `kubernetes` client (an ApiClient whose `call_api` answers
instead of the network), keeps one RayService, answers GET, applies JSON merge patches
(RFC 7386) with resourceVersion checks (409 on a stale version, as the API server does), and
records every request exactly as the client would have sent it. The patched objects are then
checked against the KubeRay CRD schema and each serveConfigV2 against Ray 2.60's Serve config
schema (helm/schemas/kuberay/).
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
from gemma_fleet.autoscaler.actuators.kubernetes import KubernetesActuator, observed_state
from gemma_fleet.autoscaler.controller import Controller
from gemma_fleet.autoscaler.metrics_source import DemandReading, PoolTraffic
from gemma_fleet.autoscaler.plan import ModelDemand, Plan
from gemma_fleet.autoscaler.settings import ControllerSettings
from gemma_fleet.deployments.pools import FleetSpec, default_fleet_path, load_fleet

SCHEMAS = Path(__file__).resolve().parents[2] / "helm" / "schemas" / "kuberay"
RAYSERVICE_SCHEMA = json.loads((SCHEMAS / "rayservice_v1.json").read_text())
SERVE_SCHEMA = json.loads((SCHEMAS / "serve_config_ray2.60.0.json").read_text())
NS, NAME = "fleet", "demo-gemma-fleet"
PATH = f"/apis/ray.io/v1/namespaces/{NS}/rayservices/{NAME}"


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


@dataclass
class FakeApiServer:
    """Stands in for the Kubernetes API server (see module docstring)."""

    obj: dict[str, Any]
    requests: list[Request] = field(default_factory=list)
    status_for: Callable[[Request], int | None] = lambda r: None  # force an error status
    before_patch: Callable[[FakeApiServer], None] | None = None  # another writer, racing us

    def bump(self) -> None:
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    def handle(
        self, method: str, url: str, headers: dict[str, str], body: Any
    ) -> rest.RESTResponse:
        parsed = urlparse(url)
        request = Request(method, parsed.path, parse_qs(parsed.query), dict(headers), body)
        self.requests.append(request)
        forced = self.status_for(request)
        if forced is not None:
            return self._answer(forced, {"kind": "Status", "code": forced})
        if parsed.path != PATH:
            return self._answer(404, {"kind": "Status", "code": 404})
        if method == "GET":
            return self._answer(200, self.obj)
        if method == "PATCH":
            if self.before_patch is not None:
                self.before_patch(self)
            assert headers["Content-Type"] == "application/merge-patch+json"
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != self.obj["metadata"]["resourceVersion"]:
                return self._answer(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
            patched = merge_patch(self.obj, body)
            patched["metadata"]["resourceVersion"] = self.obj["metadata"]["resourceVersion"]
            self.obj = patched
            self.bump()
            return self._answer(200, self.obj)
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

    def call_api(  # type: ignore[override]
        self,
        method: str,
        url: str,
        header_params: dict[str, str] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> rest.RESTResponse:
        return self.server.handle(method, url, header_params or {}, body)


@pytest.fixture
def fleet() -> FleetSpec:
    return load_fleet(default_fleet_path())


def container(name: str) -> dict[str, Any]:
    return {"name": name, "image": "ghcr.io/example/gemma-fleet:1.0"}


def rayservice(fleet: FleetSpec, *, in_tree: bool = False) -> dict[str, Any]:
    """A RayService as the Helm chart would render it: one worker group per node pool, Serve
    autoscaling bounds from the fleet file on every pool deployment."""
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
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "100"},
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
    }


def actuator_for(server: FakeApiServer, fleet: FleetSpec) -> KubernetesActuator:
    api = client.CustomObjectsApi(FakeServerApiClient(server))
    return KubernetesActuator(fleet, NS, NAME, api=api)


def assert_valid(obj: dict[str, Any]) -> dict[str, Any]:
    """The object against the RayService CRD schema, its serveConfigV2 against Ray's; returns
    the parsed serve config."""
    jsonschema.validate(obj, RAYSERVICE_SCHEMA)
    config = yaml.safe_load(obj["spec"]["serveConfigV2"])
    jsonschema.validate(config, SERVE_SCHEMA)
    return dict(config)


def deployments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in config["applications"][0]["deployments"]}


def groups(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in obj["spec"]["rayClusterConfig"]["workerGroupSpecs"]}


def test_fixture_rayservice_is_valid(fleet: FleetSpec) -> None:
    # The starting object itself must pass the schemas, or later checks prove nothing.
    assert_valid(rayservice(fleet))


def test_observe_reads_serve_replicas_and_worker_group_floors(fleet: FleetSpec) -> None:
    server = FakeApiServer(rayservice(fleet))
    state = actuator_for(server, fleet).observe()
    assert state.replicas == {p.name: p.replicas.min for p in fleet.model_pools}
    assert state.nodes == {np.name: np.min_nodes for np in fleet.node_pools}
    (get,) = server.requests
    assert (get.method, get.path) == ("GET", PATH)


def test_apply_sends_one_merge_patch_with_resource_version(fleet: FleetSpec) -> None:
    server = FakeApiServer(rayservice(fleet))
    desired = FleetState(
        replicas={"gemma-4-e2b": 3, "gemma-4-e4b": 1, "gemma-4-26b-a4b": 2, "gemma-4-31b": 1},
        nodes={"l4": 2, "h100": 1},
    )
    actuator_for(server, fleet).apply(desired)

    patches = [r for r in server.requests if r.method == "PATCH"]
    assert len(patches) == 1
    patch = patches[0]
    assert patch.path == PATH
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert patch.query["fieldManager"] == ["gemma-fleet-autoscaler"]
    assert patch.body["metadata"] == {"resourceVersion": "100"}
    # Only what the autoscaler owns is in the patch.
    assert set(patch.body["spec"]) == {"serveConfigV2", "rayClusterConfig"}
    assert set(patch.body["spec"]["rayClusterConfig"]) == {"workerGroupSpecs"}

    config = assert_valid(server.obj)
    deps = deployments(config)
    assert {n: d["num_replicas"] for n, d in deps.items()} == desired.replicas
    # Explicitly null: that (not a missing key) overrides an autoscaling_config set in code.
    assert all(d["autoscaling_config"] is None for d in deps.values())
    g = groups(server.obj)
    assert (g["l4"]["replicas"], g["l4"]["minReplicas"], g["l4"]["maxReplicas"]) == (2, 2, 4)
    assert (g["h100"]["replicas"], g["h100"]["minReplicas"], g["h100"]["maxReplicas"]) == (1, 1, 2)
    # The rest of each group survives the list replacement untouched.
    assert g["l4"]["template"]["spec"]["containers"][0]["name"] == "ray-worker"
    assert "gpu_pool_l4" in g["l4"]["rayStartParams"]["resources"]
    # And reading it back gives what was applied.
    assert actuator_for(server, fleet).observe() == desired


def test_applying_the_observed_state_sends_no_patch(fleet: FleetSpec) -> None:
    server = FakeApiServer(rayservice(fleet))
    actuator = actuator_for(server, fleet)
    desired = FleetState(
        replicas={p.name: 2 for p in fleet.model_pools}, nodes={"l4": 2, "h100": 2}
    )
    actuator.apply(desired)
    version = server.obj["metadata"]["resourceVersion"]
    actuator.apply(desired)
    assert [r.method for r in server.requests].count("PATCH") == 1
    assert server.obj["metadata"]["resourceVersion"] == version


def test_conflict_rereads_and_reapplies_keeping_the_other_writers_change(
    fleet: FleetSpec,
) -> None:
    server = FakeApiServer(rayservice(fleet))
    raced = []

    def other_writer(s: FakeApiServer) -> None:
        # Someone (a person with kubectl, the chart's upgrade) edits the object between our
        # read and our patch, once.
        if not raced:
            groups(s.obj)["h100"]["idleTimeoutSeconds"] = 120
            s.bump()
            raced.append(True)

    server.before_patch = other_writer
    desired = FleetState(replicas={"gemma-4-e2b": 2}, nodes={"l4": 1, "h100": 2})
    actuator_for(server, fleet).apply(desired)

    methods = [r.method for r in server.requests]
    assert methods == ["GET", "PATCH", "GET", "PATCH"]
    assert server.requests[1].body["metadata"]["resourceVersion"] == "100"
    assert server.requests[3].body["metadata"]["resourceVersion"] == "101"
    assert_valid(server.obj)
    g = groups(server.obj)
    assert g["h100"]["idleTimeoutSeconds"] == 120  # their edit was not overwritten
    assert g["h100"]["minReplicas"] == 2  # and ours landed
    assert (
        deployments(yaml.safe_load(server.obj["spec"]["serveConfigV2"]))["gemma-4-e2b"][
            "num_replicas"
        ]
        == 2
    )


def test_endless_conflicts_give_up_with_a_clear_error(fleet: FleetSpec) -> None:
    server = FakeApiServer(rayservice(fleet))
    server.before_patch = FakeApiServer.bump
    with pytest.raises(ActuatorError, match="kept changing: 5 patches conflicted"):
        actuator_for(server, fleet).apply(FleetState(replicas={"gemma-4-e2b": 2}))


def test_forbidden_names_the_rbac_needed(fleet: FleetSpec) -> None:
    server = FakeApiServer(rayservice(fleet), status_for=lambda r: 403)
    with pytest.raises(ActuatorError, match=r"needs get and patch on rayservices\.ray\.io"):
        actuator_for(server, fleet).observe()


def test_missing_rayservice_and_missing_worker_group_are_named(fleet: FleetSpec) -> None:
    server = FakeApiServer(rayservice(fleet), status_for=lambda r: 404)
    with pytest.raises(ActuatorError, match=f"RayService {NS}/{NAME} not found"):
        actuator_for(server, fleet).observe()
    obj = rayservice(fleet)
    obj["spec"]["rayClusterConfig"]["workerGroupSpecs"].pop()  # no h100 group
    with pytest.raises(ActuatorError, match="no worker group named 'h100'"):
        actuator_for(FakeApiServer(obj), fleet).apply(FleetState(replicas={}, nodes={"h100": 1}))


@pytest.mark.parametrize("in_tree", [True, False])
def test_worker_replicas_are_never_lowered_only_the_floor(fleet: FleetSpec, in_tree: bool) -> None:
    obj = rayservice(fleet, in_tree=in_tree)
    groups(obj)["l4"].update(replicas=3, minReplicas=3)
    server = FakeApiServer(obj)
    actuator_for(server, fleet).apply(FleetState(replicas={}, nodes={"l4": 1}))
    g = groups(server.obj)["l4"]
    # The floor comes down; the node itself is left for the Ray autoscaler to remove once idle
    # (KubeRay would delete a random pod if replicas dropped with in-tree autoscaling off).
    assert (g["minReplicas"], g["replicas"]) == (1, 3)
    assert_valid(server.obj)
    # Growing raises both at once.
    actuator_for(server, fleet).apply(FleetState(replicas={}, nodes={"l4": 4}))
    g = groups(server.obj)["l4"]
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

    server = FakeApiServer(rayservice(fleet))
    rates = {"gemma-4-E2B": 2.0, "gemma-4-E4B": 0.0, "gemma-4-26B-A4B": 0.0, "gemma-4-31B": 1.0}
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
    state = observed_state(server.obj, fleet, "gemma-fleet")
    assert state.replicas["gemma-4-e2b"] == 3 and state.replicas["gemma-4-31b"] == 2
    # Two 31B TP=2 replicas and one 26B take 5 H100 GPUs: two 4-GPU nodes.
    assert state.nodes == {"l4": 2, "h100": 2}
    assert_valid(server.obj)
    patches = sum(r.method == "PATCH" for r in server.requests)
    assert not controller.step().applied
    assert sum(r.method == "PATCH" for r in server.requests) == patches


def test_patched_serve_config_overrides_autoscaling_set_in_code(fleet: FleetSpec) -> None:
    """What Ray Serve 2.60 makes of the patched serveConfigV2 (its own override step of a
    declarative deploy, `application_state.override_deployment_info`) for pool deployments
    whose code sets an autoscaling_config, as serve_app.py's do: a fixed replica count and no
    autoscaler of Serve's own. Without the explicit null the code's autoscaling would stay."""
    from ray import serve
    from ray.serve._private.application_state import override_deployment_info
    from ray.serve._private.deployment_info import DeploymentInfo
    from ray.serve.schema import ServeDeploySchema

    def from_code(name: str) -> DeploymentInfo:
        @serve.deployment(name=name, autoscaling_config={"min_replicas": 1, "max_replicas": 4})
        class Pool:
            pass

        return DeploymentInfo(
            deployment_config=Pool._deployment_config,
            replica_config=Pool._replica_config,
            start_time_ms=0,
            deployer_job_id="test",
        )

    def applied(obj: dict[str, Any]) -> dict[str, tuple[int | None, bool]]:
        config = ServeDeploySchema.model_validate(yaml.safe_load(obj["spec"]["serveConfigV2"]))
        (app,) = config.applications
        infos = {p.name: from_code(p.name) for p in fleet.model_pools}
        out = override_deployment_info(infos, app)
        return {
            name: (
                i.deployment_config.num_replicas,
                i.deployment_config.autoscaling_config is not None,
            )
            for name, i in out.items()
        }

    before = rayservice(fleet)
    # The chart's form without the null: num_replicas next to autoscaling set in code.
    config = yaml.safe_load(before["spec"]["serveConfigV2"])
    for d in config["applications"][0]["deployments"]:
        d.pop("autoscaling_config")
        d["num_replicas"] = 2
    before["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    assert all(autoscaled for _, autoscaled in applied(before).values())

    server = FakeApiServer(before)
    actuator_for(server, fleet).apply(FleetState(replicas={p.name: 3 for p in fleet.model_pools}))
    assert applied(server.obj) == {p.name: (3, False) for p in fleet.model_pools}
