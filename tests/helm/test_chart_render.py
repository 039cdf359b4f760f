"""Every example values file (and the defaults) lints, renders, and renders objects a cluster
would accept: core objects against Kubernetes 1.31's schemas (strict), the RayService and its
RayCluster against KubeRay's CRD schemas, serveConfigV2 against Ray Serve 2.60's config schema.
Then the properties that matter are asserted on the parsed objects. Offline: `helm template`
only; no API server exists here, so nothing is applied."""

from __future__ import annotations

import base64
import copy
import json
import math
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import typer.main
import yaml
from chart_support import (
    CHART,
    EXAMPLES,
    KUBERAY_SCHEMAS,
    KUBERNETES_VERSION,
    NAMESPACE,
    RELEASE,
    HelmBinaries,
    Render,
    Rendered,
    run_tool,
    secret_behind_file,
)
from redis_server import free_port

from gemma_fleet.autoscaler.actuators import kubernetes as actuator
from gemma_fleet.autoscaler.settings import load_settings
from gemma_fleet.cli.main import app as cli_app
from gemma_fleet.deployments.pools.load import parse_fleet
from gemma_fleet.gateway.ray_headers import CALLBACK as RAY_HEADERS_CALLBACK
from gemma_fleet.vram.profile import MAX_TP

DEFAULTS = CHART / "values.yaml"
CASES = [DEFAULTS, *EXAMPLES]
# Custom resources only their own schemas know; kubernetes-validate has no schema for them.
CRD_GROUPS = ("ray.io/", "monitoring.coreos.com/")


def _values(path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = yaml.safe_load(DEFAULTS.read_text())
    if path != DEFAULTS:
        _merge(merged, yaml.safe_load(path.read_text()))
    return merged


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    """Helm's values merge: maps key by key, everything else replaced."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _strict(schema: Any) -> Any:
    """A copy of a JSON schema that refuses unknown properties wherever it lists properties and
    says nothing about others, the way `kubectl --validate=strict` treats a CRD."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    """Validators built once: checking a 600 kB CRD schema per call is the slow part."""

    def load(name: str, cls: Any) -> Any:
        schema = _strict(json.loads((KUBERAY_SCHEMAS / name).read_text()))
        cls.check_schema(schema)
        return cls(schema)

    return {
        "RayService": load("rayservice_v1.json", jsonschema.Draft7Validator),
        "RayCluster": load("raycluster_v1.json", jsonschema.Draft7Validator),
        "serve": load("serve_config_ray2.60.0.json", jsonschema.Draft202012Validator),
    }


@pytest.fixture(scope="module", params=CASES, ids=lambda p: p.stem)
def case(request: pytest.FixtureRequest, render: Render) -> tuple[dict[str, Any], Rendered]:
    path: Path = request.param
    out = render(path)
    assert out.returncode == 0, out.stderr
    return _values(path), out


def _rayservice(out: Rendered) -> dict[str, Any]:
    return out.one("RayService")


def _serve_config(out: Rendered) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_rayservice(out)["spec"]["serveConfigV2"])
    return config


def _ray_pod_templates(out: Rendered) -> list[dict[str, Any]]:
    cluster = _rayservice(out)["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]


def _pod_specs(out: Rendered) -> list[dict[str, Any]]:
    specs = [t["spec"] for t in _ray_pod_templates(out)]
    for obj in out.objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            specs.append(obj["spec"]["template"]["spec"])
        elif obj["kind"] == "Pod":
            specs.append(obj["spec"])
    return specs


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_helm_lint_strict_passes(path: Path, helm_lint: Any) -> None:
    out = helm_lint(path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_example_fleets_are_valid_fleet_files() -> None:
    """`fleet:` is exactly a FleetSpec: the package's own loader (VRAM fit included) takes it."""
    for path in CASES:
        fleet = parse_fleet(_values(path)["fleet"], source=str(path))
        assert all(p.engine == "vllm" for p in fleet.model_pools), path


def test_core_objects_pass_strict_kubernetes_validation(
    case: tuple[dict[str, Any], Rendered],
) -> None:
    _, out = case
    checked = 0
    for obj in out.objects:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    # Objects KubeRay builds from the RayService: its serve Service and every pod template.
    service = {"apiVersion": "v1", "kind": "Service", **_rayservice(out)["spec"]["serveService"]}
    kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)
    for template in _ray_pod_templates(out):
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "ray"},
            "template": template,
        }
        kubernetes_validate.validate(pod_template, KUBERNETES_VERSION, strict=True)
    assert checked >= 8


def test_rayservice_and_raycluster_match_kuberay_schemas(
    case: tuple[dict[str, Any], Rendered], schemas: dict[str, Any]
) -> None:
    _, out = case
    service = _rayservice(out)
    schemas["RayService"].validate(service)
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": service["metadata"]["name"]},
        "spec": service["spec"]["rayClusterConfig"],
    }
    schemas["RayCluster"].validate(cluster)


def test_serve_config_matches_ray_serve_schema_and_carries_the_fleet(
    case: tuple[dict[str, Any], Rendered], schemas: dict[str, Any]
) -> None:
    values, out = case
    config = _serve_config(out)
    schemas["serve"].validate(config)
    (app,) = config["applications"]
    assert app["import_path"] == "gemma_fleet.gateway.fleet:build_app"
    assert app["route_prefix"] == "/"
    assert app["args"]["fleet_spec"] == values["fleet"]
    parse_fleet(app["args"]["fleet_spec"], source="serveConfigV2")
    (gateway,) = [d for d in app["deployments"] if d["name"] == "gateway"]
    assert gateway["num_replicas"] == values["gateway"]["replicas"]
    assert config["http_options"]["port"] == 8000
    # how long the proxy keeps an idle connection: Ray's 90 s unless set (620 behind GCLB)
    keep_alive = values["gateway"].get("keepAliveTimeoutS", 90)
    assert config["http_options"]["keep_alive_timeout_s"] == keep_alive


def test_an_upgrade_keeps_the_old_cluster_for_the_pools_drain(
    case: tuple[dict[str, Any], Rendered], render: Render
) -> None:
    """KubeRay deletes the old cluster 60 s after an upgrade moves traffic (its default), which
    cut longer answers in flight; the chart keeps it for the pools' longest drain."""
    values, out = case
    delay = _rayservice(out)["spec"]["rayClusterDeletionDelaySeconds"]
    assert delay == math.ceil(parse_fleet(values["fleet"]).longest_drain_s) == 600
    fleet = copy.deepcopy(values["fleet"])
    fleet["model_pools"][-1]["drain_timeout_s"] = 1800.5
    longer = render(values={**values, "fleet": fleet})
    assert longer.returncode == 0, longer.stderr
    assert _rayservice(longer)["spec"]["rayClusterDeletionDelaySeconds"] == 1801


def test_the_head_pod_drains_the_gateway_before_it_stops(
    case: tuple[dict[str, Any], Rendered], render: Render
) -> None:
    """The gateway replicas run in the head pod. Kubernetes' defaults (no preStop hook, 30 s
    grace) cut every answer in flight when the head stopped; the chart drains the gateway first,
    for the pools' longest drain, and gives the pod that long plus time to stop Ray."""

    def head(out: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
        spec = _rayservice(out)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
        (container,) = spec["containers"]
        return spec, container

    values, out = case
    longest = math.ceil(parse_fleet(values["fleet"]).longest_drain_s)
    fleet = copy.deepcopy(values["fleet"])
    fleet["model_pools"][-1]["drain_timeout_s"] = 1800.5
    longer = render(values={**values, "fleet": fleet})
    assert longer.returncode == 0, longer.stderr
    for rendered, drain_s in ((out, longest), (longer, 1801)):
        spec, container = head(rendered)
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:2] == ["gemma-fleet", "drain"]
        # The hook's arguments are ones the CLI takes, with the drain time it was meant to get.
        drain = typer.main.get_command(cli_app).commands["drain"]  # type: ignore[attr-defined]
        assert drain.make_context("drain", command[2:]).params["timeout"] == drain_s
        assert spec["terminationGracePeriodSeconds"] == drain_s + 30


def test_gpu_worker_pods_drain_their_node_before_they_stop(
    case: tuple[dict[str, Any], Rendered], render: Render
) -> None:
    """A GPU worker pod that stops first drains its Ray node (Serve starts the replicas'
    replacements elsewhere, then stops the old ones gracefully), with a deadline covering the
    replacements' start and the pools' drain, inside the pod's grace period."""
    values, out = case
    longest = math.ceil(parse_fleet(values["fleet"]).longest_drain_s)
    start = values["ray"]["workerDrain"]["replacementStartSeconds"]
    quick = copy.deepcopy(values)
    quick["ray"]["workerDrain"]["replacementStartSeconds"] = 0
    rendered_quick = render(values=quick)
    assert rendered_quick.returncode == 0, rendered_quick.stderr
    drain_node = typer.main.get_command(cli_app).commands["drain-node"]  # type: ignore[attr-defined]
    for rendered, drain_s in ((out, start + longest), (rendered_quick, longest)):
        groups = _rayservice(rendered)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        assert groups
        for group in groups:
            spec = group["template"]["spec"]
            (container,) = spec["containers"]
            command = container["lifecycle"]["preStop"]["exec"]["command"]
            assert command[:2] == ["gemma-fleet", "drain-node"]
            params = drain_node.make_context("drain-node", command[2:]).params
            # Serve stops a replica at once when the deadline is nearer than its drain: the
            # deadline leaves the drain, and the replacements' start before it.
            assert params["deadline"] == drain_s + 10
            assert params["node_id"] is None  # the node the hook runs on
            assert spec["terminationGracePeriodSeconds"] == drain_s + 30


def test_worker_groups_come_from_the_node_pools(case: tuple[dict[str, Any], Rendered]) -> None:
    values, out = case
    cluster = _rayservice(out)["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert list(groups) == [p["name"] for p in values["fleet"]["node_pools"]]
    for pool in values["fleet"]["node_pools"]:
        group = groups[pool["name"]]
        gpus = pool["gpus_per_node"]
        assert (group["minReplicas"], group["maxReplicas"]) == (
            pool.get("min_nodes", 0),
            pool["max_nodes"],
        )
        params = group["rayStartParams"]
        assert params["num-gpus"] == str(gpus)
        # KubeRay passes the value to `ray start --resources=...` verbatim: a quoted JSON text.
        raw = params["resources"]
        assert raw.startswith('"') and raw.endswith('"')
        assert json.loads(raw[1:-1].replace('\\"', '"')) == {f"gpu_pool_{pool['name']}": gpus}
        spec = group["template"]["spec"]
        (container,) = spec["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
        assert container["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)
        k8s = (values.get("nodePools") or {}).get(pool["name"]) or {}
        assert spec.get("nodeSelector") == k8s.get("nodeSelector")
        assert spec.get("tolerations") == k8s.get("tolerations")
        labels = group["template"]["metadata"]["labels"]
        assert labels["gemma-fleet/node-pool"] == pool["name"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    (head_container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {})


def test_ray_pods_get_settings_and_secrets_only_by_reference(
    case: tuple[dict[str, Any], Rendered],
) -> None:
    values, out = case
    for template in _ray_pod_templates(out):
        (container,) = template["spec"]["containers"]
        env = _env(container)
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"]["value"] == "1"
        assert env["RAY_SERVE_ENABLE_HA_PROXY"]["value"] == "1"
        # Ray Serve's own request headers are kept from clients (gateway/ray_headers.py)
        assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]["value"] == RAY_HEADERS_CALLBACK
        # HAProxy's wait on a client that owes it bytes: 60 s unless set, not Ray's 3,600
        idle = values["gateway"].get("clientIdleTimeoutS", 60)
        assert env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"]["value"] == str(idle)
        # answers in flight when HAProxy reloads finish for as long as a pool drains
        longest_drain = math.ceil(parse_fleet(values["fleet"]).longest_drain_s)
        assert env["RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S"]["value"] == str(longest_drain)
        assert env["GEMMA_FLEET_REDIS_DOWN"]["value"] == values["gateway"]["redisDown"]
        assert env["REDIS_URL"]["value"].startswith(("redis://", "rediss://"))
        redis = secret_behind_file(template["spec"], "REDIS_PASSWORD_FILE")
        assert redis["name"] and redis["key"]
        admin = secret_behind_file(template["spec"], "GEMMA_FLEET_ADMIN_KEY_FILE")
        own = values["admin"]["existingSecret"]
        assert admin == (
            {"name": own, "key": values["admin"]["existingSecretKey"]}
            if own
            else {"name": f"{RELEASE}-gemma-fleet-admin", "key": "admin-key"}
        )
        hf = values["huggingface"]
        if hf["existingSecret"]:
            # A file huggingface_hub reads at each download (HF_TOKEN_PATH), so a rotated token
            # reaches replicas started on running pods (tests/helm/test_hf_token_file.py).
            token = secret_behind_file(template["spec"], "HF_TOKEN_PATH", "HF_TOKEN")
            assert token == {"name": hf["existingSecret"], "key": hf["existingSecretKey"]}
        else:
            assert "HF_TOKEN_PATH" not in env and "HF_TOKEN" not in env
        otlp = values["observability"]["otlp"]["endpoint"]
        assert env.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value") == (otlp or None)
        teams = bool(values["teams"]["existingSecret"] or values["teams"]["bootstrap"])
        assert ("GEMMA_FLEET_BOOTSTRAP_TEAMS" in env) == teams
        if teams:
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            path = env["GEMMA_FLEET_BOOTSTRAP_TEAMS"]["value"]
            assert mounts[str(Path(path).parent)]["readOnly"] is True
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            assert "secret" in volumes[mounts[str(Path(path).parent)]["name"]]


def test_no_secret_value_appears_outside_secrets(case: tuple[dict[str, Any], Rendered]) -> None:
    _, out = case
    secrets: list[str] = []
    for obj in out.all("Secret"):
        secrets += [base64.b64decode(v).decode() for v in (obj.get("data") or {}).values()]
        for text in (obj.get("stringData") or {}).values():
            for team in yaml.safe_load(text).get("teams", []):
                secrets += team.get("keys", [])
    others = yaml.safe_dump([o for o in out.objects if o["kind"] != "Secret"])
    for value in secrets:
        assert len(value) >= 24
        assert value not in others


def test_autoscaler_has_only_the_rights_it_uses(case: tuple[dict[str, Any], Rendered]) -> None:
    values, out = case
    assert values["autoscaler"]["enabled"]
    (role,) = out.all("Role")
    assert role["rules"] == [
        {
            "apiGroups": ["ray.io"],
            "resources": ["rayservices", "rayclusters"],
            "verbs": ["get", "patch"],
        }
    ]
    assert not out.all("ClusterRole") and not out.all("ClusterRoleBinding")
    (binding,) = out.all("RoleBinding")
    (account,) = out.all("ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert account["automountServiceAccountToken"] is False
    (deployment,) = out.all("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    # Every other pod runs without an API token, except the Ray head: the Ray autoscaler that
    # KubeRay adds to it needs one (test_chart_on_a_cluster.py).
    head = _rayservice(out)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    for spec in _pod_specs(out):
        if spec is not pod and spec is not head:
            assert spec.get("automountServiceAccountToken") is False


def test_autoscaler_command_follows_the_cli_contract(
    case: tuple[dict[str, Any], Rendered],
) -> None:
    values, out = case
    (deployment,) = out.all("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    cmd = container["command"]
    serve = _rayservice(out)["spec"]["serveService"]["metadata"]["name"]
    assert cmd[:2] == ["gemma-fleet", "autoscale"]
    args = dict(zip(cmd[2::2], cmd[3::2], strict=False))
    assert args["--fleet"] == "/etc/gemma-fleet/fleet.yaml"
    assert args["--actuator"] == "kubernetes"
    assert args["--namespace"] == NAMESPACE
    assert args["--rayservice"] == _rayservice(out)["metadata"]["name"]
    assert args["--metrics-url"] == f"http://{serve}.{NAMESPACE}.svc:8000/metrics"
    assert float(args["--interval"]) == values["autoscaler"]["interval"]
    assert ("--dry-run" in cmd) == values["autoscaler"]["dryRun"]
    # Its own status: the port the CLI serves is the one named `metrics`, probed for liveness.
    status_port = values["autoscaler"]["statusPort"]
    assert int(args["--status-port"]) == status_port
    # The CLI listens on loopback by default; the kubelet and Prometheus come to the pod's IP.
    assert args["--status-host"] == "0.0.0.0"
    assert container["ports"] == [
        {"name": "metrics", "containerPort": status_port, "protocol": "TCP"}
    ]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    (config,) = [c for c in out.all("ConfigMap") if "fleet.yaml" in c["data"]]
    assert yaml.safe_load(config["data"]["fleet.yaml"]) == values["fleet"]
    settings = values["autoscaler"]["settings"]
    assert ("--settings" in cmd) == bool(settings)
    if settings:
        assert args["--settings"] == "/etc/gemma-fleet/autoscaler-settings.yaml"
        assert yaml.safe_load(config["data"]["autoscaler-settings.yaml"]) == settings


SETTINGS_CASES = [p for p in CASES if _values(p)["autoscaler"]["settings"]]


def test_an_example_sets_autoscaler_settings() -> None:
    """The check below needs one; without it, the settings file the chart writes is untested."""
    assert SETTINGS_CASES


@pytest.mark.parametrize("path", SETTINGS_CASES, ids=lambda p: p.stem)
def test_autoscaler_settings_are_a_valid_settings_file(
    path: Path, render: Render, tmp_path: Path
) -> None:
    """What the chart mounts is what `gemma-fleet autoscale --settings` loads."""
    out = render(path)
    assert out.returncode == 0, out.stderr
    (config,) = [c for c in out.all("ConfigMap") if "fleet.yaml" in c["data"]]
    settings = tmp_path / "autoscaler-settings.yaml"
    settings.write_text(config["data"]["autoscaler-settings.yaml"])
    load_settings(settings)


def test_pods_run_non_root_with_read_only_root_filesystems(
    case: tuple[dict[str, Any], Rendered],
) -> None:
    _, out = case
    specs = _pod_specs(out)
    assert len(specs) >= 4
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]["memory"]
            # Writable scratch space exists where the processes need it.
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, container["name"]


def test_redis_is_persistent_password_protected_and_reachable_only_from_ray(
    case: tuple[dict[str, Any], Rendered],
) -> None:
    values, out = case
    if not values["redis"]["enabled"]:
        assert not out.all("StatefulSet")
        ray_spec = _ray_pod_templates(out)[0]["spec"]
        env = _env(ray_spec["containers"][0])
        assert env["REDIS_URL"]["value"] == values["redis"]["external"]["url"]
        ref = secret_behind_file(ray_spec, "REDIS_PASSWORD_FILE")
        assert ref == {
            "name": values["redis"]["external"]["existingSecret"],
            "key": values["redis"]["external"]["existingSecretKey"],
        }
        return
    (sts,) = out.all("StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    script = " ".join(container["args"])
    assert "--appendonly yes" in script and '--requirepass "$REDIS_PASSWORD"' in script
    password_ref = _env(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    # The gateway follows the same Secret as a file, so that a rotation reaches it.
    ray_ref = secret_behind_file(_ray_pod_templates(out)[0]["spec"], "REDIS_PASSWORD_FILE")
    assert ray_ref == password_ref
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    services = [
        s
        for s in out.all("Service")
        if s["spec"]["selector"].get("app.kubernetes.io/component") == "redis"
    ]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert services and all(s["spec"]["selector"].items() <= pod_labels.items() for s in services)
    (policy,) = [p for p in out.all("NetworkPolicy") if p["metadata"]["name"].endswith("-redis")]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchExpressions"] == [
        {
            "key": "app.kubernetes.io/component",
            "operator": "In",
            "values": ["ray-head", "ray-worker"],
        }
    ]


def _redis_options(out: Rendered) -> list[str]:
    """The in-chart Redis's command-line options, as its container's shell would pass them."""
    (sts,) = out.all("StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    (script,) = container["args"]
    words = shlex.split(script)
    assert words[:2] == ["exec", "redis-server"], script
    return words[2:]


def wait_for_redis(port: int, password: str, timeout_s: float = 10) -> redis.Redis:
    client = redis.Redis(port=port, password=password, socket_timeout=2)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return client
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_the_in_chart_redis_refuses_writes_at_its_ceiling_instead_of_growing(
    render: Render, tmp_path: Path
) -> None:
    """Without maxmemory, once-keys (0.7 MB per request/s sustained) grew Redis into its
    container's 1 GiB limit, where the kernel kills it. A real redis-server given the rendered
    options takes the ceiling and, full, refuses writes (what the gateway counts as Redis
    down) rather than evicting a counter. An upgrade reusing values from before the setting
    renders no ceiling, as then."""
    options = _redis_options(render(values={"redis": {"maxmemory": "3mb"}}))
    assert options[options.index("--maxmemory") :][:4] == [
        "--maxmemory", "3mb", "--maxmemory-policy", "noeviction"
    ]  # fmt: skip
    assert "--maxmemory 600mb" in " ".join(_redis_options(render()))
    assert "--maxmemory" not in _redis_options(render(values={"redis": {"maxmemory": None}}))

    exe = shutil.which("redis-server")
    assert exe is not None, "redis-server is installed by ./dev setup"
    port = free_port()
    # The pod's own paths and password become this test's; every other option as rendered.
    local = {"--dir": str(tmp_path), "--requirepass": "pw", "--port": str(port)}
    previous = ["", *options[:-1]]
    args = [local.get(before, word) for before, word in zip(previous, options, strict=True)]
    server = subprocess.Popen([exe, *args, "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL)
    try:
        client = wait_for_redis(port, "pw")
        assert client.config_get("maxmemory") == {"maxmemory": str(3 * 2**20)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            for i in range(100_000):
                client.hset(f"gf:once:{i:032x}", "admit", 1)
        assert client.dbsize() == i  # nothing evicted
    finally:
        server.kill()
        server.wait()


def test_serve_port_is_open_only_to_the_namespace_and_listed_peers(
    case: tuple[dict[str, Any], Rendered],
) -> None:
    values, out = case
    (policy,) = [p for p in out.all("NetworkPolicy") if p["metadata"]["name"].endswith("-ray")]
    metrics_rules = []
    for rule in policy["spec"]["ingress"]:
        if "ports" not in rule:  # Ray pods of this release, among themselves
            (peer,) = rule["from"]
            assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
            continue
        ports = {p["port"] for p in rule["ports"]}
        peers = rule["from"]
        if ports == {8000}:
            assert peers == [{"podSelector": {}}, *values["networkPolicy"]["serveFrom"]]
        if 8080 in ports:
            metrics_rules.append(rule)
    # Ray's metrics port (the gateway's metrics included) and HAProxy's exporter only to those
    # who may scrape; the serve port is not a metrics port any more (no ServiceMonitor
    # scrapes it).
    metrics_from = values["networkPolicy"]["metricsFrom"]
    scraped = [{"port": 8080, "protocol": "TCP"}, {"port": 9101, "protocol": "TCP"}]
    expected_rules = [{"from": metrics_from, "ports": scraped}]
    assert metrics_rules == (expected_rules if metrics_from else [])
    (autoscaler_policy,) = [
        p for p in out.all("NetworkPolicy") if p["metadata"]["name"].endswith("-autoscaler")
    ]
    # The autoscaler serves only its status, and only to those who may scrape metrics.
    status_port = {"port": values["autoscaler"]["statusPort"], "protocol": "TCP"}
    expected = [{"from": metrics_from, "ports": [status_port]}] if metrics_from else None
    assert autoscaler_policy["spec"].get("ingress") == expected


def test_disruption_budgets_select_each_node_pools_workers(
    case: tuple[dict[str, Any], Rendered],
) -> None:
    """Integer minAvailable only: Ray pods belong to a RayCluster (no /scale subresource), so
    a maxUnavailable would leave 0 allowed disruptions (test_chart_on_a_cluster.py)."""
    values, out = case
    budgets = {b["metadata"]["name"]: b for b in out.all("PodDisruptionBudget")}
    groups = _rayservice(out)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    for group in groups:
        labels = group["template"]["metadata"]["labels"]
        selecting = [
            b
            for b in budgets.values()
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        floor = group["minReplicas"] - values["podDisruptionBudget"]["workerMaxUnavailable"]
        assert len(selecting) == (1 if floor > 0 else 0), group["groupName"]
        for budget in selecting:
            assert budget["spec"] == {**budget["spec"], "minAvailable": floor}
            assert "maxUnavailable" not in budget["spec"]
    protect = values["podDisruptionBudget"]["protectHead"]
    head = [b for b in budgets.values() if b["metadata"]["name"].endswith("-head")]
    assert [b["spec"]["minAvailable"] for b in head] == ([1] if protect else [])


def test_ingress_fronts_the_serve_service(case: tuple[dict[str, Any], Rendered]) -> None:
    values, out = case
    ingress_values = values["gateway"]["ingress"]
    if not ingress_values["enabled"]:
        assert not out.all("Ingress")
        return
    (ingress,) = out.all("Ingress")
    serve = _rayservice(out)["spec"]["serveService"]
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": serve["metadata"]["name"], "port": {"name": "serve"}}
    assert serve["spec"]["ports"][0]["name"] == "serve"
    assert ingress["spec"]["tls"] == ingress_values["tls"]


def test_monitoring_and_dashboard(case: tuple[dict[str, Any], Rendered]) -> None:
    values, out = case
    obs = values["observability"]
    # No ServiceMonitor on the serve Service: each scrape of the gateway's /metrics there
    # reaches one gateway replica, so Prometheus would mix the replicas' counters. The gateway
    # reaches Prometheus through Ray's metrics port (tests/gateway/test_serve_ingress.py).
    assert not out.all("ServiceMonitor")
    assert bool(out.all("PodMonitor")) == obs["podMonitor"]["enabled"]
    for pod_monitor in out.all("PodMonitor"):
        # Every Ray pod (where the gateway's, the engines' and Ray's metrics are) and the
        # autoscaler's (its status): the selector matches each pod, which has the port named.
        (deployment,) = out.all("Deployment")
        cluster = _rayservice(out)["spec"]["rayClusterConfig"]
        pods = [
            deployment["spec"]["template"],
            cluster["headGroupSpec"]["template"],
            *[g["template"] for g in cluster["workerGroupSpecs"]],
        ]
        selector = pod_monitor["spec"]["selector"]
        # Ray's metrics port on every pod; HAProxy's exporter (Serve's HTTP front) on the Ray
        # pods, the only ones that run it.
        endpoint, front = pod_monitor["spec"]["podMetricsEndpoints"]
        assert (front["port"], front["path"]) == ("haproxy-metrics", "/metrics")
        for ray_pod in pods[1:]:
            ports = [p for c in ray_pod["spec"]["containers"] for p in c.get("ports", [])]
            assert {"name": "haproxy-metrics", "containerPort": 9101, "protocol": "TCP"} in ports
        for pod in pods:
            labels = pod["metadata"]["labels"]
            assert selector["matchLabels"].items() <= labels.items()
            assert all(
                labels.get(e["key"]) in e["values"]
                for e in selector["matchExpressions"]
                if e["operator"] == "In"
            )
            named = [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
            assert endpoint["port"] in named
    # The alerts ship as the rule file, unchanged ({{ $labels }} left for Prometheus).
    rules = out.all("PrometheusRule")
    assert bool(rules) == obs["prometheusRule"]["enabled"]
    for rule in rules:
        shipped = yaml.safe_load(
            (CHART / "files" / "alerts" / "gemma-fleet.rules.yaml").read_text()
        )
        assert rule["spec"] == shipped
        assert rule["metadata"]["labels"].items() >= obs["prometheusRule"]["labels"].items()
    (dashboard,) = [c for c in out.all("ConfigMap") if "gemma-fleet.json" in c["data"]]
    assert json.loads(dashboard["data"]["gemma-fleet.json"])["panels"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_helm_test_pod_checks_health_and_models(case: tuple[dict[str, Any], Rendered]) -> None:
    values, out = case
    (pod,) = out.all("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    script = container["args"][0]
    assert '"/health"' in script and '"/v1/models"' in script
    env = _env(container)
    serve = _rayservice(out)["spec"]["serveService"]["metadata"]["name"]
    assert env["GATEWAY_URL"]["value"] == f"http://{serve}.{NAMESPACE}.svc:8000"
    expected = [p["name"] for p in values["fleet"]["model_pools"]]
    assert json.loads(env["EXPECTED_MODELS"]["value"]) == expected
    compile(script, "helm-test", "exec")


def test_the_validators_used_above_reject_unknown_fields(
    case: tuple[dict[str, Any], Rendered], schemas: dict[str, Any]
) -> None:
    """The strict checks are not vacuous: one misspelt field fails each of them."""
    _, out = case
    deployment = copy.deepcopy(out.all("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    service = copy.deepcopy(_rayservice(out))
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(jsonschema.ValidationError):
        schemas["RayService"].validate(service)
    config = _serve_config(out)
    config["applications"][0]["deployments"][0]["num_replica"] = 2
    with pytest.raises(jsonschema.ValidationError):
        schemas["serve"].validate(config)


def test_autoscaler_actuator_reads_the_rendered_rayservice(
    case: tuple[dict[str, Any], Rendered], schemas: dict[str, Any]
) -> None:
    """The Kubernetes actuator finds the application, every pool's replicas and every node
    pool's worker group where the chart put them (in the RayService, and in the RayCluster
    KubeRay makes from its rayClusterConfig), sees nothing to change at the start, and its
    patches for a scale-up still satisfy the KubeRay and Ray Serve schemas."""
    values, out = case
    fleet = parse_fleet(values["fleet"])
    service = _rayservice(out)
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "active"},
        "spec": copy.deepcopy(service["spec"]["rayClusterConfig"]),
    }
    for state in (
        actuator.observed_state(service, fleet, "gemma-fleet"),
        actuator.observed_state(service, fleet, "gemma-fleet", cluster),
    ):
        assert state.replicas == {p.name: p.replicas.start for p in fleet.model_pools}
        assert state.nodes == {n.name: n.min_nodes for n in fleet.node_pools}
    assert actuator.serve_patch(service, state.replicas, "gemma-fleet") is None
    assert actuator.nodes_patch(cluster, fleet, state.nodes) is None
    pool = fleet.model_pools[0]
    serve = actuator.serve_patch(
        service, {**state.replicas, pool.name: pool.replicas.max}, "gemma-fleet"
    )
    nodes = actuator.nodes_patch(cluster, fleet, {n: c + 1 for n, c in state.nodes.items()})
    assert serve is not None and nodes is not None
    patched = copy.deepcopy(service)
    patched["spec"]["serveConfigV2"] = serve["spec"]["serveConfigV2"]
    schemas["RayService"].validate(patched)
    schemas["serve"].validate(_serve_config_of(patched))
    cluster["spec"]["workerGroupSpecs"] = nodes["spec"]["workerGroupSpecs"]
    schemas["RayCluster"].validate(cluster)


def _serve_config_of(service: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(service["spec"]["serveConfigV2"])
    return config


def test_a_pool_starting_at_zero_is_rendered_as_serve_accepts_it(
    case: tuple[dict[str, Any], Rendered], render: Render, schemas: dict[str, Any]
) -> None:
    """`gemma-fleet plan --values-out` writes replicas.initial: 0 for a pool the plan leaves
    empty. Serve refuses num_replicas: 0 (and the whole application with it); the chart
    writes the actuator's zero form, which the actuator reads back as 0."""
    values, _ = case
    fleet = copy.deepcopy(values["fleet"])
    empty = fleet["model_pools"][0]
    empty["replicas"] = {**(empty.get("replicas") or {}), "min": 0, "initial": 0}
    out = render(values={**values, "fleet": fleet})
    assert out.returncode == 0, out.stderr
    config = _serve_config(out)
    schemas["serve"].validate(config)
    (entry,) = [d for d in config["applications"][0]["deployments"] if d["name"] == empty["name"]]
    assert entry == {
        "name": empty["name"],
        "autoscaling_config": actuator.AT_ZERO,  # the form the actuator writes
    }
    state = actuator.observed_state(_rayservice(out), parse_fleet(fleet), "gemma-fleet")
    assert state.replicas[empty["name"]] == 0


def test_autoscaler_off_leaves_pools_to_ray_serve(render: Render) -> None:
    out = render(values={"autoscaler": {"enabled": False}})
    assert not out.all("Deployment") and not out.all("Role") and not out.all("ServiceAccount")
    names = [d["name"] for d in _serve_config(out)["applications"][0]["deployments"]]
    assert names == ["gateway"]


def test_install_dry_run_prints_how_to_get_a_key_and_call_the_api(
    helm_bins: HelmBinaries,
) -> None:
    """`helm install --dry-run=client` (no cluster) renders NOTES.txt for the user."""
    example = CHART / "examples" / "mixed-l4-h100.yaml"
    cmd = [str(helm_bins.helm), "install", RELEASE, str(CHART), "-n", NAMESPACE]
    out = run_tool([*cmd, "--dry-run=client", "-f", str(example)])
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} get secret gemma-admin -o jsonpath='{{.data.admin-key}}'" in (
        notes
    )
    assert '"$GEMMA_URL/admin/teams"' in notes and "/admin/teams/search/keys" in notes
    assert "export GEMMA_URL=https://gemma.example.com" in notes
    assert 'gemma-fleet keys create --team search --url "$GEMMA_URL"' in notes
    assert '"$GEMMA_URL/v1/chat/completions" -H "Authorization: Bearer $GEMMA_API_KEY"' in notes


def test_bootstrap_team_keys_live_only_in_the_teams_secret(render: Render) -> None:
    key = "k" * 40
    team = {"name": "search", "allowed_models": ["gemma-4-e4b"], "keys": [key]}
    out = render(values={"teams": {"bootstrap": [team]}})
    (secret,) = [s for s in out.all("Secret") if "teams.yaml" in s.get("stringData", {})]
    assert yaml.safe_load(secret["stringData"]["teams.yaml"]) == {"teams": [team]}
    others = yaml.safe_dump([o for o in out.objects if o is not secret])
    assert key not in others
    env = _env(_ray_pod_templates(out)[0]["spec"]["containers"][0])
    assert env["GEMMA_FLEET_BOOTSTRAP_TEAMS"]["value"] == "/etc/gemma-fleet/teams/teams.yaml"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_fleet_with_every_field_explicit_renders(
    path: Path, render: Render, schemas: dict[str, Any]
) -> None:
    """`gemma-fleet plan --values-out` writes `fleet:` as a full FleetSpec dump (every field,
    nulls and defaults included); the values schema and the checks must take that shape."""
    dumped = parse_fleet(_values(path)["fleet"]).model_dump(mode="json")
    assert dumped["model_pools"][0]["checkpoint"] is None  # the shape really is the full dump
    out = render(path, values={"fleet": dumped})
    assert out.returncode == 0, out.stderr
    config = _serve_config(out)
    schemas["serve"].validate(config)
    assert config["applications"][0]["args"]["fleet_spec"] == dumped


def test_the_gateway_options_in_fleet_values_reach_the_gateway(render: Render) -> None:
    """A platform engineer sets the gateway's options under `fleet.gateway` (an internal
    media server, PDF readers): the chart passes them in the fleet spec Ray Serve builds the
    gateway from."""
    from gemma_fleet.gateway.fleet import gateway_settings

    fleet = _values(DEFAULTS)["fleet"]
    fleet["gateway"] = {"media": {"allowed_networks": ["10.20.0.0/16"]}, "pdf_readers": 2}
    out = render(values={"fleet": fleet})
    assert out.returncode == 0, out.stderr
    spec = _serve_config(out)["applications"][0]["args"]["fleet_spec"]
    settings = gateway_settings(parse_fleet(spec))
    assert settings.media.allowed_networks == ["10.20.0.0/16"]
    assert settings.pdf_readers == 2


# The checks a fleet file's loader makes on each field that JSON Schema can say too.
_CHECKS = ("type", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "minItems")
# Bounds the fleet file checks after its schema, which the chart's schema states: a
# tensor-parallel group fits the largest node planned for (validate.py's tp_refusal).
_AFTER_THE_SCHEMA = {("model_pools", "tp"): {"maximum": MAX_TP}}


def _resolved(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`schema` with pydantic's `$ref` replaced by the definition it names."""
    if "$ref" not in schema:
        return schema
    named = defs[schema["$ref"].rsplit("/", 1)[1]]
    return {**named, **{k: v for k, v in schema.items() if k != "$ref"}}


def _field_checks(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """What one property of a JSON schema demands, with pydantic's `$ref` and
    `anyOf: [X, null]` flattened to the form the chart's schema writes by hand."""
    schema = _resolved(schema, defs)
    if "anyOf" in schema:
        kinds = schema["anyOf"]
        schema = {k: v for kind in kinds for k, v in kind.items() if k != "type"}
        schema["type"] = [kind["type"] for kind in kinds]
    checks = {k: schema[k] for k in _CHECKS if k in schema}
    if "enum" in checks:
        checks["enum"] = sorted(checks["enum"])
        checks.pop("type", None)  # the chart writes enums without a type
    return checks


def _schema_differences(
    chart: dict[str, Any], fleet: dict[str, Any], defs: dict[str, Any], where: tuple[str, ...]
) -> list[str]:
    """Every field, requirement or bound where the chart's schema and the fleet file's part
    ways, by its path."""
    fleet = _resolved(fleet, defs)
    if fleet.get("type") == "array" and "items" in fleet and "properties" in chart["items"]:
        return _schema_differences(chart["items"], fleet["items"], defs, where)
    differences = []
    if set(chart["properties"]) != set(fleet["properties"]):
        differences.append(
            f"{where}: fields {sorted(chart['properties'])} != {sorted(fleet['properties'])}"
        )
    if set(chart.get("required", [])) != set(fleet.get("required", [])):
        differences.append(f"{where}: required {chart.get('required')} != {fleet.get('required')}")
    if chart.get("additionalProperties") != fleet.get("additionalProperties"):
        differences.append(f"{where}: additionalProperties differ")
    for name in set(chart["properties"]) & set(fleet["properties"]):
        ours, theirs = chart["properties"][name], _resolved(fleet["properties"][name], defs)
        if "properties" in theirs or "properties" in ours.get("items", {}):
            differences += _schema_differences(ours, theirs, defs, (*where, name))
            continue
        expected = {**_field_checks(theirs, defs), **_AFTER_THE_SCHEMA.get((*where, name), {})}
        if (found := _field_checks(ours, defs)) != expected:
            differences.append(
                f"{'.'.join((*where, name))}: chart {found} != fleet file {expected}"
            )
    return differences


def test_the_charts_fleet_schema_demands_what_the_fleet_file_does() -> None:
    """values.schema.json describes `fleet` by hand (with descriptions for `helm` users):
    every field, requirement and bound there is the fleet file's own, so a value the chart
    accepts is one the gateway and the autoscaler accept, and `helm install` refuses what
    they would refuse after the pods start."""
    from gemma_fleet.deployments.pools.schema import FleetSpec

    chart = json.loads((CHART / "values.schema.json").read_text())["properties"]["fleet"]
    fleet = FleetSpec.model_json_schema()
    assert _schema_differences(chart, fleet, fleet["$defs"], ()) == []
