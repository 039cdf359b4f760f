"""What a real cluster would trip over although the objects pass their schemas: KubeRay's own
validation and side effects, the disruption controller, schedulability on the machines the
examples name, and what the Ingress publishes. Offline like the other chart tests (`helm
template` only); each assertion cites the behaviour it relies on in a comment or in
docs/helm.md."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from chart_support import (
    CHART,
    EXAMPLES,
    KUBERAY_SCHEMAS,
    REPO,
    HelmBinaries,
    Render,
    Rendered,
    run_tool,
)

DEFAULTS = CHART / "values.yaml"
CASES = [DEFAULTS, *EXAMPLES]


def _cluster(out: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = out.one("RayService")["spec"]["rayClusterConfig"]
    return spec


def _ok(out: Rendered) -> Rendered:
    assert out.returncode == 0, out.stderr
    return out


# --- 1. The Ray autoscaler in the head pod needs the service-account token -------------------


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_head_mounts_the_token_the_in_tree_autoscaler_reads(path: Any, render: Render) -> None:
    """KubeRay adds the Ray autoscaler container to the head pod when enableInTreeAutoscaling is
    on; its kuberay node provider reads /var/run/secrets/kubernetes.io/serviceaccount/token."""
    cluster = _cluster(_ok(render(path)))
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["template"]["spec"]["automountServiceAccountToken"] is True
    for group in cluster["workerGroupSpecs"]:
        assert group["template"]["spec"]["automountServiceAccountToken"] is False


def test_without_in_tree_autoscaling_no_ray_pod_mounts_a_token(render: Render) -> None:
    cluster = _cluster(_ok(render(values={"ray": {"enableInTreeAutoscaling": False}})))
    assert cluster["enableInTreeAutoscaling"] is False
    assert "autoscalerOptions" not in cluster
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["automountServiceAccountToken"] is False
    for group in cluster["workerGroupSpecs"]:
        assert group["template"]["spec"]["automountServiceAccountToken"] is False


# --- 2. A node pool's own idle timeout needs Ray's autoscaler v2 -------------------------------


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_shipped_values_keep_kuberays_default_autoscaler(path: Any, render: Render) -> None:
    """KubeRay refuses a worker group's idleTimeoutSeconds unless autoscalerOptions.version is
    v2 (validateWorkerGroupIdleTimeout); the shipped values use neither, so KubeRay 1.3 (no
    `version` field) takes them too."""
    cluster = _cluster(_ok(render(path)))
    assert "version" not in cluster["autoscalerOptions"]
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == 600
    for group in cluster["workerGroupSpecs"]:
        assert "idleTimeoutSeconds" not in group


def test_a_node_pools_idle_timeout_without_autoscaler_v2_is_refused(render: Render) -> None:
    for ray in ({}, {"autoscalerOptions": {"version": "v1"}}, {"enableInTreeAutoscaling": False}):
        out = render(values={"ray": ray, "nodePools": {"l4": {"idleTimeoutSeconds": 1800}}})
        assert out.returncode != 0, ray
        assert (
            "nodePools.l4.idleTimeoutSeconds: KubeRay accepts a node pool's own idle timeout "
            "only with Ray's autoscaler v2: set ray.autoscalerOptions.version: v2"
        ) in out.stderr


def test_autoscaler_v2_renders_its_version_and_the_pools_idle_timeout(render: Render) -> None:
    values = {
        "ray": {"autoscalerOptions": {"version": "v2"}},
        "nodePools": {"l4": {"idleTimeoutSeconds": 1800}},
    }
    out = _ok(render(values=values))
    schema = json.loads((KUBERAY_SCHEMAS / "rayservice_v1.json").read_text())
    jsonschema.Draft7Validator(schema).validate(out.one("RayService"))
    cluster = _cluster(out)
    assert cluster["autoscalerOptions"]["version"] == "v2"
    assert cluster["autoscalerOptions"]["idleTimeoutSeconds"] == 600
    (group,) = cluster["workerGroupSpecs"]
    assert group["idleTimeoutSeconds"] == 1800
    # KubeRay wants restartPolicy unset or Never on every Ray pod under v2.
    templates = [cluster["headGroupSpec"]["template"], group["template"]]
    assert all(t["spec"].get("restartPolicy", "Never") == "Never" for t in templates)
    # v2 alone, without a per-pool timeout, renders no worker group timeout.
    plain = _cluster(_ok(render(values={"ray": {"autoscalerOptions": {"version": "v2"}}})))
    assert plain["autoscalerOptions"]["version"] == "v2"
    assert "idleTimeoutSeconds" not in plain["workerGroupSpecs"][0]


# --- 3. Disruption budgets the disruption controller can evaluate -----------------------------


def _budgets(out: Rendered) -> dict[str, dict[str, Any]]:
    return {b["metadata"]["name"]: b["spec"] for b in out.all("PodDisruptionBudget")}


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_every_budget_is_an_integer_min_available(path: Any, render: Render) -> None:
    """Every budget here selects pods owned by a RayCluster, which has no /scale subresource:
    the disruption controller then evaluates only an integer minAvailable ("rayclusters.ray.io
    does not implement the scale subresource" otherwise, kuberay #2662)."""
    out = _ok(render(path, values={"podDisruptionBudget": {"protectHead": True}}))
    budgets = _budgets(out)
    assert budgets
    for name, spec in budgets.items():
        assert set(spec) == {"minAvailable", "selector"}, name
        assert isinstance(spec["minAvailable"], int) and spec["minAvailable"] >= 1, name
    # Redis (StatefulSet) and the autoscaler (Deployment) have /scale owners but no budget.
    for spec in budgets.values():
        component = spec["selector"]["matchLabels"]["app.kubernetes.io/component"]
        assert component in ("ray-head", "ray-worker")


def test_worker_budgets_follow_each_pools_floor(render: Render) -> None:
    fleet = {
        "node_pools": [
            {
                "name": n,
                "gpu": "L4",
                "gpus_per_node": 1,
                "min_nodes": m,
                "max_nodes": 4,
                "cost_per_gpu_hour": 0.85,
            }
            for n, m in (("zero", 0), ("one", 1), ("three", 3))
        ],
        "model_pools": [
            {"name": "e4b", "model": "gemma-4-E4B", "node_pool": "three", "engine": "vllm"}
        ],
    }
    out = _ok(render(values={"fleet": fleet}))
    assert _budgets(out) == {
        "gf-gemma-fleet-three": {
            "minAvailable": 2,
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "gemma-fleet",
                    "app.kubernetes.io/instance": "gf",
                    "app.kubernetes.io/component": "ray-worker",
                    "gemma-fleet/node-pool": "three",
                }
            },
        }
    }
    stricter = render(values={"fleet": fleet, "podDisruptionBudget": {"workerMaxUnavailable": 0}})
    floors = {n: s["minAvailable"] for n, s in _budgets(_ok(stricter)).items()}
    assert floors == {"gf-gemma-fleet-one": 1, "gf-gemma-fleet-three": 3}


# --- 4. Worker requests fit the machines the examples name ------------------------------------

GIB = 2**30
# (vCPU, memory in GB, GPU, GPUs): https://cloud.google.com/compute/docs/accelerator-optimized-machines
MACHINES = {
    "g2-standard-24": (24, 96, "L4", 2),
    "a2-highgpu-2g": (24, 170, "A100-40GB", 2),
    "a3-highgpu-4g": (104, 936, "H100-80GB", 4),  # half an a3-highgpu-8g: 208 vCPU, 1,872 GB
}
# The machine each example's node pool names in its comments.
NAMED = {
    ("l4-only", "l4"): "g2-standard-24",
    ("a100-40gb", "a100"): "a2-highgpu-2g",
    ("mixed-l4-h100", "l4"): "g2-standard-24",
    ("mixed-l4-h100", "h100"): "a3-highgpu-4g",
}
# Left for DaemonSets (GPU device plugin, logging and metrics agents, kube-proxy, CSI).
SYSTEM_PODS = (1.0, 4 * GIB)


def _tiers(amount: float, tiers: list[tuple[float, float]]) -> float:
    """Sum of rate x the part of `amount` in each (size, rate) tier; the last tier is open."""
    reserved, rest = 0.0, amount
    for size, rate in tiers:
        part = min(rest, size)
        reserved, rest = reserved + part * rate, rest - part
    return reserved


def gke_allocatable(vcpus: int, memory_gb: float) -> tuple[float, float]:
    """GKE's node reservations (https://cloud.google.com/kubernetes-engine/docs/concepts/
    plan-node-sizes#memory_and_cpu_reservations): CPU 6 % of the first core, 1 % of the next,
    0.5 % of the next 2, 0.25 % above 4; memory 25 % of the first 4 GiB, 20 % of the next 4,
    10 % of the next 8, 6 % of the next 112, 2 % above 128 GiB, plus 100 MiB for eviction."""
    inf = float("inf")
    cpu = vcpus - _tiers(vcpus, [(1, 0.06), (1, 0.01), (2, 0.005), (inf, 0.0025)])
    mem_gib = memory_gb * 1e9 / GIB
    reserved = _tiers(mem_gib, [(4, 0.25), (4, 0.2), (8, 0.1), (112, 0.06), (inf, 0.02)])
    return cpu, (mem_gib - reserved) * GIB - 100 * 2**20


def _quantity(value: str | int | float) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(value)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def test_gke_allocatable_matches_googles_worked_figures() -> None:
    # Google's example: a 4-vCPU node reserves 80 m (60 + 10 + 5 + 5).
    assert gke_allocatable(4, 16)[0] == pytest.approx(3.92)
    # 150 GiB of memory: 9.76 GiB reserved + 100 MiB for eviction = 9.8577 GiB (the worked
    # example of github.com/hatemosphere/gke-node-allocatable-memory-calculator).
    memory = gke_allocatable(4, 150 * GIB / 1e9)[1]
    assert (150 * GIB - memory) / GIB == pytest.approx(9.8577, abs=1e-4)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_worker_requests_fit_the_named_machine(path: Any, render: Render) -> None:
    """One worker per node: the worker's requests, GPUs included, fit the machine its example
    names after GKE's reservations, with room for the node's system pods."""
    text = path.read_text()
    out = _ok(render(path))
    fleet = {p["name"]: p for p in yaml.safe_load(text)["fleet"]["node_pools"]}
    for group in _cluster(out)["workerGroupSpecs"]:
        machine = NAMED[(path.stem, group["groupName"])]
        vcpus, memory_gb, gpu, gpus = MACHINES[machine]
        assert f"{machine}: {vcpus} vCPU, {memory_gb} GB" in text, machine
        assert (fleet[group["groupName"]]["gpu"], fleet[group["groupName"]]["gpus_per_node"]) == (
            gpu,
            gpus,
        )
        (container,) = group["template"]["spec"]["containers"]
        requests = container["resources"]["requests"]
        assert requests["nvidia.com/gpu"] == str(gpus)
        cpu, memory = gke_allocatable(vcpus, memory_gb)
        assert _quantity(requests["cpu"]) <= cpu - SYSTEM_PODS[0], (machine, requests)
        assert _quantity(requests["memory"]) <= memory - SYSTEM_PODS[1], (machine, requests)
        # /dev/shm is memory the container is charged for: it must fit inside the limit.
        limit = _quantity(container["resources"]["limits"]["memory"])
        (shm,) = [v for v in group["template"]["spec"]["volumes"] if v["name"] == "dshm"]
        assert _quantity(shm["emptyDir"]["sizeLimit"]) < limit


# --- 5. The Ingress publishes the API, not the gateway's metrics ------------------------------

GATEWAY_SOURCES = [REPO / "platform" / "gateway" / f for f in ("app.py", "admin.py")]


def _gateway_routes() -> set[str]:
    """The gateway's HTTP routes as its FastAPI decorators declare them."""
    pattern = re.compile(r'@(?:app|router)\.(?:get|post|put|patch|delete)\(\s*"([^"]+)"')
    routes = {r for f in GATEWAY_SOURCES for r in pattern.findall(f.read_text())}
    assert {"/v1/chat/completions", "/admin/teams", "/metrics", "/health"} <= routes
    return routes


def _routed(path: str, rules: list[dict[str, Any]]) -> bool:
    """Whether an Ingress path rule sends `path` on (Prefix matches whole path elements)."""
    for rule in rules:
        if rule["pathType"] == "Exact" and path == rule["path"]:
            return True
        if rule["pathType"] == "Prefix":
            prefix = rule["path"].rstrip("/")
            if path == prefix or path.startswith(prefix + "/") or prefix == "":
                return True
    return False


def _ingress_paths(out: Rendered) -> list[dict[str, Any]]:
    (ingress,) = out.all("Ingress")
    (rule,) = ingress["spec"]["rules"]
    paths: list[dict[str, Any]] = rule["http"]["paths"]
    return paths


def test_ingress_routes_the_api_and_never_the_metrics(render: Render) -> None:
    out = _ok(render(CHART / "examples" / "mixed-l4-h100.yaml"))
    paths = _ingress_paths(out)
    assert [(p["path"], p["pathType"]) for p in paths] == [
        ("/v1", "Prefix"),
        ("/admin", "Prefix"),
        ("/health", "Exact"),
        ("/ready", "Exact"),
    ]
    for route in _gateway_routes():
        assert _routed(route, paths) == (route != "/metrics"), route
    for hidden in ("/metrics", "/openapi.json", "/-/routes", "/-/healthz", "/v1x", "/"):
        assert not _routed(hidden, paths), hidden
    # In the cluster nothing changes: the PodMonitor still scrapes Ray's metrics port, which
    # carries the gateway's metrics (and HAProxy's exporter), and the autoscaler still reads
    # the serve Service.
    (pod_monitor,) = out.all("PodMonitor")
    endpoints = [e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]]
    assert endpoints == ["metrics", "haproxy-metrics"]
    (deployment,) = out.all("Deployment")
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--metrics-url") + 1].endswith(
        "-serve-svc.serving.svc:8000/metrics"
    )


def test_ingress_without_the_admin_api(render: Render) -> None:
    values = {"gateway": {"ingress": {"enabled": True, "exposeAdmin": False}}}
    paths = _ingress_paths(_ok(render(values=values)))
    assert [p["path"] for p in paths] == ["/v1", "/health", "/ready"]
    assert not _routed("/admin/teams", paths)


NGINX = "nginx.ingress.kubernetes.io/"


def _ingress_annotations(out: Rendered) -> dict[str, str]:
    (ingress,) = out.all("Ingress")
    annotations: dict[str, str] = ingress["metadata"].get("annotations") or {}
    return annotations


def test_an_nginx_ingress_takes_the_fleets_bodies_and_long_answers(render: Render) -> None:
    """ingress-nginx's defaults (1 MB bodies, 60 s reads) would refuse a 2 MB image with its
    own 413 and cut a long non-streamed answer with a 504."""
    nginx = {"enabled": True, "className": "nginx"}
    annotations = _ingress_annotations(_ok(render(values={"gateway": {"ingress": nginx}})))
    assert annotations == {
        NGINX + "proxy-body-size": "26m",  # the gateway's 25 MiB and one more: its 413 answers
        NGINX + "proxy-read-timeout": "600",  # the pools' drain_timeout_s
        NGINX + "proxy-send-timeout": "600",
    }
    bigger = {
        "gateway": {"ingress": nginx},
        "fleet": {"gateway": {"max_body_bytes": 100 * 2**20 + 1}},
    }
    assert _ingress_annotations(_ok(render(values=bigger)))[NGINX + "proxy-body-size"] == "102m"
    # What the values set wins (the mixed example asks for 32m), and is kept beside the rest.
    mixed = _ingress_annotations(_ok(render(CHART / "examples" / "mixed-l4-h100.yaml")))
    assert mixed[NGINX + "proxy-body-size"] == "32m"
    assert mixed[NGINX + "proxy-send-timeout"] == "600"
    assert mixed["cert-manager.io/cluster-issuer"] == "letsencrypt"
    # Another controller's Ingress gets no nginx settings.
    other = {"gateway": {"ingress": {"enabled": True, "className": "traefik"}}}
    assert _ingress_annotations(_ok(render(values=other))) == {}


def test_the_proxy_keeps_idle_connections_longer_than_a_google_load_balancer(
    render: Render,
) -> None:
    """GCLB reuses a backend connection for up to 600 s: a proxy closing it sooner (Ray's
    90 s) hands an occasional request a 502. docs/helm.md says to set 620 there."""
    gce = {"keepAliveTimeoutS": 620, "ingress": {"enabled": True, "className": "gce"}}
    out = _ok(render(values={"gateway": gce}))
    config = yaml.safe_load(out.one("RayService")["spec"]["serveConfigV2"])
    assert config["http_options"]["keep_alive_timeout_s"] == 620
    assert _ingress_annotations(out) == {}


def _ray_pod_env(out: Rendered, name: str) -> set[str]:
    """The values `name` takes across every Ray pod's container."""
    cluster = _cluster(_ok(out))
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [group["template"] for group in cluster["workerGroupSpecs"]]
    return {
        env["value"]
        for template in templates
        for container in template["spec"]["containers"]
        for env in container["env"]
        if env["name"] == name
    }


def test_every_ray_pod_fronts_serve_with_haproxy_unless_told_not_to(render: Render) -> None:
    """HAProxy on each pod's port 8000, forwarding to the gateway replicas' own HTTP servers
    (KubeRay's high-throughput setup); `ray.haproxyIngress: false` goes back to Serve's proxy
    actor. Every Ray pod must agree: Serve reads the variable on each node."""
    variable = "RAY_SERVE_ENABLE_HA_PROXY"
    assert _ray_pod_env(render(), variable) == {"1"}
    monitored = {"observability": {"podMonitor": {"enabled": True}}}
    off = _ok(render(values={"ray": {"haproxyIngress": False}, **monitored}))
    assert _ray_pod_env(off, variable) == {"0"}
    # Nothing to scrape without HAProxy: no exporter port, no PodMonitor endpoint for it.
    (pod_monitor,) = off.all("PodMonitor")
    assert [e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    cluster = _cluster(off)
    for template in [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]:
        ports = [p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])]
        assert "haproxy-metrics" not in ports


def test_haproxy_closes_idle_clients_after_the_gateways_setting(render: Render) -> None:
    """Ray leaves HAProxy's `timeout client` at 3,600 s: a client that sends half its headers
    holds a connection for an hour. The chart sets 60 s, or `gateway.clientIdleTimeoutS`, on
    every pod (each pod's HAProxy reads its own environment)."""
    variable = "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"
    assert _ray_pod_env(render(), variable) == {"60"}
    assert _ray_pod_env(render(values={"gateway": {"clientIdleTimeoutS": 300}}), variable) == {
        "300"
    }
    for wrong in (0, 3601, "60"):
        out = render(values={"gateway": {"clientIdleTimeoutS": wrong}})
        assert out.returncode != 0 and "clientIdleTimeoutS" in out.stderr


def test_ingress_paths_of_ones_own_are_refused(render: Render) -> None:
    """A catch-all `/` is what published /metrics; the chart owns the path list now."""
    host = {"host": "gemma.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}
    out = render(values={"gateway": {"ingress": {"enabled": True, "hosts": [host]}}})
    assert out.returncode != 0
    assert "/gateway/ingress/hosts/0" in out.stderr and "paths" in out.stderr


# --- 6. No deprecated RayService fields; a startup deadline through KubeRay's annotation --------


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_rayservice_sets_no_field_kuberay_ignores(path: Any, render: Render) -> None:
    """rayservice_types.go: "Deprecated: This field is not used anymore" (kuberay #1685)."""
    service = _ok(render(path)).one("RayService")
    for field in ("deploymentUnhealthySecondThreshold", "serviceUnhealthySecondThreshold"):
        assert field not in service["spec"]
    assert "ray.io/initializing-timeout" not in service["metadata"].get("annotations", {})


@pytest.mark.parametrize(
    "field", ["deploymentUnhealthySecondThreshold", "serviceUnhealthySecondThreshold"]
)
def test_the_deprecated_thresholds_are_refused_by_name(render: Render, field: str) -> None:
    out = render(values={"ray": {field: 900}})
    assert out.returncode != 0 and field in out.stderr


@pytest.mark.parametrize(("value", "annotation"), [("45m", "45m"), (2700, "2700")])
def test_initializing_timeout_becomes_kuberays_annotation(
    render: Render, value: str | int, annotation: str
) -> None:
    service = _ok(render(values={"ray": {"initializingTimeout": value}})).one("RayService")
    assert service["metadata"]["annotations"] == {"ray.io/initializing-timeout": annotation}


@pytest.mark.parametrize("value", ["soon", "0", 0, "-5m"])
def test_an_initializing_timeout_kuberay_would_refuse_is_refused(
    render: Render, value: str | int
) -> None:
    out = render(values={"ray": {"initializingTimeout": value}})
    assert out.returncode != 0 and "/ray/initializingTimeout" in out.stderr


# --- 7. What a helm upgrade needs once the autoscaler owns serveConfigV2 -----------------------


def test_notes_and_docs_say_how_to_upgrade_past_the_autoscalers_field(
    helm_bins: HelmBinaries,
) -> None:
    """The autoscaler's merge patches (field manager gemma-fleet-autoscaler) own
    .spec.serveConfigV2; a server-side `helm upgrade` conflicts there unless it forces."""
    cmd = [str(helm_bins.helm), "install", "gf", str(CHART), "-n", "serving", "--dry-run=client"]
    notes = run_tool(cmd).stdout.split("NOTES:", 1)[1]
    assert "helm upgrade gf <chart> -n serving -f <your values> --force-conflicts" in notes
    assert "(or --server-side=false)" in notes and "starting num_replicas" in notes
    docs = " ".join((REPO / "docs" / "helm.md").read_text().split())
    assert "--force-conflicts" in docs and "`--server-side=false`" in docs
    assert "A `helm upgrade` puts `num_replicas` back" not in docs
    off = run_tool([*cmd, "--set", "autoscaler.enabled=false"]).stdout.split("NOTES:", 1)[1]
    assert "--force-conflicts" not in off
