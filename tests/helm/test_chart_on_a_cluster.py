"""What a real cluster would trip over although the objects pass their schemas: KubeRay's own
validation and side effects, the disruption controller, schedulability on the machines the
examples name, and what the Ingress publishes. Offline like the other chart tests (`helm
template` only); each assertion cites the behaviour it relies on in a comment or in
docs/helm.md."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from chart_support import CHART, EXAMPLES, Render, Rendered

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


def _values_of(path: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded
