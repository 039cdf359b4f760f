"""What a real cluster would trip over although the objects pass their schemas: KubeRay's own
validation and side effects, the disruption controller, schedulability on the machines the
examples name, and what the Ingress publishes. Offline like the other chart tests (`helm
template` only); each assertion cites the behaviour it relies on in a comment or in
docs/helm.md."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from chart_support import CHART, EXAMPLES, KUBERAY_SCHEMAS, Render, Rendered

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
