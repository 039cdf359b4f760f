"""The chart guards the gateway's /metrics (per-team counters, on port 8000, which a LoadBalancer
Service publishes) with a bearer token: a Secret it generates and keeps like the admin key, or
one the user names, reaching the gateway (every Ray pod) and the autoscaler (which scrapes
/metrics) as a file of a Secret volume, named by the variable both read (a rotated Secret
reaches running pods; docs/helm.md "Rotating credentials"). Offline: `helm template`."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import chart_support
import pytest
import typer.main
from chart_support import (
    CHART,
    EXAMPLES,
    NAMESPACE,
    RELEASE,
    Render,
    Rendered,
    secret_behind_file,
)

from gemma_fleet.cli.main import app as cli_app
from gemma_fleet.teams.settings import TeamsSettings

VARIABLE = "GEMMA_FLEET_METRICS_TOKEN_FILE"
CASES = [CHART / "values.yaml", *EXAMPLES]


def _pod_specs(out: Rendered) -> dict[str, dict[str, Any]]:
    """The Ray head's, every worker group's and the autoscaler's pod spec, by a name."""
    cluster = out.one("RayService")["spec"]["rayClusterConfig"]
    found = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        found["worker " + group["groupName"]] = group["template"]["spec"]
    for deployment in out.all("Deployment"):
        found["autoscaler"] = deployment["spec"]["template"]["spec"]
    return found


def _token_refs(out: Rendered) -> dict[str, dict[str, str]]:
    """Per pod: the Secret and key its GEMMA_FLEET_METRICS_TOKEN_FILE is mounted from."""
    return {where: secret_behind_file(spec, VARIABLE) for where, spec in _pod_specs(out).items()}


def _ok(out: Rendered) -> Rendered:
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_a_generated_token_reaches_the_gateway_and_the_autoscaler(
    path: Path, render: Render
) -> None:
    out = _ok(render(path))
    secret = out.one("Secret", f"{RELEASE}-gemma-fleet-metrics")
    # Kept like the admin key: `helm uninstall` leaves it, `lookup` reuses it on upgrade.
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    token = base64.b64decode(secret["data"]["metrics-token"]).decode()
    assert len(token) == 48 and token.isalnum()
    refs = _token_refs(out)
    assert "head" in refs and "autoscaler" in refs and any(w.startswith("worker") for w in refs)
    for where, ref in refs.items():
        assert ref == {"name": secret["metadata"]["name"], "key": "metrics-token"}, where
    assert token not in out.stdout.replace(secret["data"]["metrics-token"], "")


def test_the_variable_is_the_one_the_gateway_and_the_autoscaler_read(
    render: Render, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The file the pods get under that name turns /metrics' token on in the gateway's settings
    and is `--metrics-token-file` of the command the autoscaler Deployment runs."""
    token = "t" * 30
    out = _ok(render(values={"gateway": {"metrics": {"token": token}}}))
    secret = out.one("Secret", f"{RELEASE}-gemma-fleet-metrics")
    assert base64.b64decode(secret["data"]["metrics-token"]).decode() == token
    mounted = tmp_path / "metrics-token"  # what the kubelet writes from the Secret's key
    mounted.write_text(token)
    settings = TeamsSettings.from_env({VARIABLE: str(mounted), "GEMMA_FLEET_AUTH": "disabled"})
    assert settings.metrics_token is not None
    assert settings.metrics_token.get_secret_value() == token
    assert settings.metrics_token_file == mounted
    (deployment,) = out.all("Deployment")
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["gemma-fleet", "autoscale"] and "--metrics-token" not in command
    monkeypatch.setenv(VARIABLE, str(mounted))
    autoscale = typer.main.get_command(cli_app).commands["autoscale"]  # type: ignore[attr-defined]
    assert autoscale.make_context("autoscale", command[2:]).params["metrics_token_file"] == mounted


def test_an_existing_secret_is_used_and_none_is_generated(render: Render) -> None:
    values = {"gateway": {"metrics": {"existingSecret": "ops-metrics", "existingSecretKey": "tok"}}}
    out = _ok(render(values=values))
    names = [s["metadata"]["name"] for s in out.all("Secret")]
    assert f"{RELEASE}-gemma-fleet-metrics" not in names
    for where, ref in _token_refs(out).items():
        assert ref == {"name": "ops-metrics", "key": "tok"}, where


def test_without_generation_a_token_is_required(render: Render) -> None:
    out = render(values={"gateway": {"metrics": {"generate": False}}})
    assert out.returncode != 0
    assert "gateway.metrics: missing metrics token: set gateway.metrics.existingSecret" in (
        out.stderr
    )
    short = render(values={"gateway": {"metrics": {"token": "short"}}})
    assert short.returncode != 0 and "/gateway/metrics/token" in short.stderr
    # A token given in the values is enough without generation.
    _ok(render(values={"gateway": {"metrics": {"generate": False, "token": "k" * 24}}}))


def test_install_notes_say_how_to_read_the_metrics_token(
    helm_bins: chart_support.HelmBinaries,
) -> None:
    cmd = [str(helm_bins.helm), "install", RELEASE, str(CHART), "-n", NAMESPACE]
    out = chart_support.run_tool([*cmd, "--dry-run=client"])
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert (
        f"export GEMMA_FLEET_METRICS_TOKEN=$(kubectl -n {NAMESPACE} get secret "
        f"{RELEASE}-gemma-fleet-metrics "
        "-o jsonpath='{.data.metrics-token}' | base64 -d)"
    ) in notes
    assert '-H "Authorization: Bearer $GEMMA_FLEET_METRICS_TOKEN"' in notes
