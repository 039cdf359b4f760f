"""Bad values stop `helm template` (and so `helm install`) with a message that names the values
path and the problem: the values schema for wrong types and shapes, the chart's own checks for
pools that do not fit their GPU, tensor-parallel groups larger than a node, and missing
secrets, and the schema for sections an older chart's values lack. The chart's fit check
agrees with the package's loader at the exact boundary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, EXAMPLES, RELEASE, HelmBinaries, Render, run_tool

from gemma_fleet.deployments.pools.load import FleetError, parse_fleet

TABLE = json.loads((CHART / "files" / "vram-fit.json").read_text())


def _fleet(gpu: str, gpus_per_node: int, **pool: Any) -> dict[str, Any]:
    model_pool = {
        "name": "p",
        "model": "gemma-4-31B",
        "quant": "bf16",
        "tp": 1,
        "max_model_len": 8192,
        "node_pool": "gpus",
        "engine": "vllm",
        "replicas": {"min": 1, "max": 1},
        **pool,
    }
    return {
        "node_pools": [
            {
                "name": "gpus",
                "gpu": gpu,
                "gpus_per_node": gpus_per_node,
                "min_nodes": 0,
                "max_nodes": 2,
                "cost_per_gpu_hour": 1.0,
            }
        ],
        "model_pools": [model_pool],
    }


def _refusal(render: Render, values: dict[str, Any]) -> str:
    out = render(values=values)
    assert out.returncode != 0, "helm template accepted bad values"
    assert "Traceback" not in out.stderr and "panic" not in out.stderr
    return out.stderr


def test_pool_that_does_not_fit_its_gpu_names_pool_gpu_and_a_fix(render: Render) -> None:
    err = _refusal(render, {"fleet": _fleet("L4", 4, tp=1)})
    assert "fleet.model_pools[p]: gemma-4-31B bf16 tp=1 does not fit L4" in err
    assert "fits with tp=4" in err


def test_context_longer_than_fits_says_how_long_fits(render: Render) -> None:
    limit = TABLE["fit"]["gemma-4-31B"]["bf16"]["A100-40GB"]["bf16/multimodal"]["2"]
    err = _refusal(render, {"fleet": _fleet("A100-40GB", 2, tp=2, max_model_len=32768)})
    assert (
        f"gemma-4-31B bf16 tp=2 max_model_len=32768 does not fit A100-40GB (node pool "
        f'"gpus"): at most {limit} tokens fit' in err
    )


def test_tp_larger_than_a_node_is_refused(render: Render) -> None:
    err = _refusal(render, {"fleet": _fleet("H100-80GB", 2, tp=4)})
    assert 'fleet.model_pools[p].tp: tp 4 exceeds the 2 GPUs per node of node pool "gpus"' in err


def test_tp_the_model_cannot_split_is_refused(render: Render) -> None:
    err = _refusal(render, {"fleet": _fleet("H100-80GB", 4, tp=3)})
    assert "fleet.model_pools[p].tp: gemma-4-31B cannot split its attention heads 3 ways" in err
    assert "valid tp: 1, 2, 4" in err


def test_unknown_catalog_names_list_the_known_ones(render: Render) -> None:
    fleet = _fleet("T4", 1, model="gemma-5", quant="nf4")
    err = _refusal(render, {"fleet": fleet})
    assert 'fleet.node_pools[gpus].gpu: unknown GPU "T4"; known: A100-40GB' in err
    assert 'fleet.model_pools[p].model: unknown model "gemma-5"' in err
    assert 'fleet.model_pools[p].quant: unknown quantization "nf4"' in err


def test_simulator_pools_are_refused_on_a_cluster(render: Render) -> None:
    err = _refusal(render, {"fleet": _fleet("H100-80GB", 4, engine="simulator")})
    assert 'fleet.model_pools[p].engine: "simulator" runs only on a laptop' in err


def test_placement_for_an_unknown_node_pool_is_refused(render: Render) -> None:
    values = {"fleet": _fleet("H100-80GB", 4), "nodePools": {"h100": {"nodeSelector": {}}}}
    err = _refusal(render, values)
    assert 'nodePools.h100: no node pool "h100" in fleet.node_pools (known: gpus)' in err


def test_missing_admin_secret_is_refused(render: Render) -> None:
    err = _refusal(render, {"admin": {"generate": False}})
    assert "admin: missing admin secret: set admin.existingSecret" in err


def test_an_slo_for_a_model_no_pool_serves_is_refused(render: Render) -> None:
    settings = {"model_slos": {"gemma-4-E9B": {"ttft_p95_s": 1.0}}}
    err = _refusal(render, {"autoscaler": {"enabled": True, "settings": settings}})
    assert 'autoscaler.settings.model_slos.gemma-4-E9B: no model pool serves "gemma-4-E9B"' in err


def test_external_redis_without_url_is_refused(render: Render) -> None:
    err = _refusal(render, {"redis": {"enabled": False}})
    assert "redis.external.url: required when redis.enabled is false" in err


@pytest.mark.parametrize("url", ["redis://:pw@redis:6379/0", "rediss://gw:pw@redis:6380/0"])
def test_an_external_redis_password_in_two_places_is_refused(render: Render, url: str) -> None:
    """The gateway would refuse to start on both (REDIS_URL with a password and
    REDIS_PASSWORD_FILE); a user alone in the URL (an ACL user) is fine."""
    external = {"url": url, "existingSecret": "redis-pw"}
    err = _refusal(render, {"redis": {"enabled": False, "external": external}})
    assert "redis.external: the URL carries a password and existingSecret is set" in err
    user_only = {"url": "rediss://gw@redis:6380/0", "existingSecret": "redis-pw"}
    accepted = render(values={"redis": {"enabled": False, "external": user_only}})
    assert accepted.returncode == 0, accepted.stderr


def test_all_problems_are_reported_at_once(render: Render) -> None:
    values = {"fleet": _fleet("L4", 1, tp=2), "admin": {"generate": False}}
    err = _refusal(render, values)
    assert "2 problem(s) with the values" in err


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"gateway": {"redisDown": "open"}}, "/gateway/redisDown"),
        ({"gateway": {"replicas": 0}}, "/gateway/replicas"),
        ({"admin": {"key": "short"}}, "/admin/key"),
        ({"teams": {"bootstrap": [{"name": "Search!"}]}}, "/teams/bootstrap/0/name"),
        ({"teams": {"bootstrap": [{"name": "a", "keys": ["x"]}]}}, "/teams/bootstrap/0/keys/0"),
        ({"redis": {"external": {"url": "http://redis:6379"}}}, "/redis/external/url"),
        ({"fleet": {"node_pools": [{"name": "L4", "gpu": "L4"}]}}, "/fleet/node_pools/0"),
        ({"autoscaler": {"interval": "fast"}}, "/autoscaler/interval"),
        ({"fleet": {"gateway": {"pdf_readers": 0}}}, "/fleet/gateway/pdf_readers"),
        ({"fleet": {"gateway": {"media": {"allowed_network": []}}}}, "allowed_network"),
        ({"gateway": {"replica": 2}}, "replica"),
        # Removed: the gateway reaches Prometheus through the PodMonitor (docs/helm.md).
        ({"observability": {"serviceMonitor": {"enabled": True}}}, "serviceMonitor"),
    ],
)
def test_values_schema_names_the_wrong_field(
    render: Render, values: dict[str, Any], expected: str
) -> None:
    err = _refusal(render, values)
    assert "values don't meet the specifications of the schema" in err or "schema" in err
    assert expected in err


@pytest.mark.parametrize(
    ("model", "quant", "gpu", "gpus_per_node", "tp"),
    [
        ("gemma-4-31B", "bf16", "A100-40GB", 2, 2),
        ("gemma-4-31B", "bf16", "H100-80GB", 1, 1),
        ("gemma-4-31B", "fp8", "L4", 2, 2),
        ("gemma-4-26B-A4B", "q4_k_m", "L4", 1, 1),
    ],
)
def test_chart_and_package_agree_at_the_fit_boundary(
    render: Render, model: str, quant: str, gpu: str, gpus_per_node: int, tp: int
) -> None:
    """At the table's limit both accept; one token more and both refuse."""
    limit = TABLE["fit"][model][quant][gpu]["bf16/multimodal"][str(tp)]
    context = TABLE["models"][model]["context_length"]
    assert 0 < limit < context, "pick a configuration whose limit lies inside the context"
    for length, accepted in ((limit, True), (limit + 1, False)):
        fleet = _fleet(gpu, gpus_per_node, model=model, quant=quant, tp=tp, max_model_len=length)
        out = render(values={"fleet": fleet})
        try:
            parse_fleet(fleet)
            package_accepts = True
        except FleetError:
            package_accepts = False
        assert (out.returncode == 0) == accepted == package_accepts, (length, out.stderr)


def test_pools_with_their_own_memory_settings_are_left_to_the_full_check(
    render: Render,
) -> None:
    """The table assumes vLLM's default memory settings; a pool that changes them is checked
    by build_app at start (and by `parse_fleet` in CI), not refused on a guess."""
    fleet = _fleet("A100-40GB", 2, tp=2, max_model_len=16384, gpu_memory_utilization=0.95)
    parse_fleet(fleet)  # fits: 0.95 of the GPU leaves room the default 0.9 does not
    assert render(values={"fleet": fleet}).returncode == 0


def test_values_of_an_older_chart_name_the_key_they_lack(
    helm_bins: HelmBinaries, tmp_path: Path
) -> None:
    """`helm upgrade --reuse-values` renders the new chart with the values of the release as
    installed, which lack the keys a newer chart added. Emulated here by the chart with
    `gateway.metrics` taken out of its defaults: the schema names the missing key, where the
    templates stopped on "nil pointer evaluating interface {}.existingSecret"."""
    chart = tmp_path / "gemma-fleet"
    shutil.copytree(CHART, chart)
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    del defaults["gateway"]["metrics"]
    (chart / "values.yaml").write_text(yaml.safe_dump(defaults))
    out = run_tool([str(helm_bins.helm), "template", RELEASE, str(chart), "-f", str(EXAMPLES[0])])
    assert out.returncode != 0
    assert "at '/gateway': missing property 'metrics'" in out.stderr
    assert "nil pointer" not in out.stderr


def test_every_section_of_the_defaults_is_required_by_the_schema() -> None:
    """Every mapping of the defaults that the schema describes field by field is required
    where it sits, so a values set without it (an older chart's, through --reuse-values) is
    refused by name before a template dereferences it. A section added to values.yaml
    without its `required` entry fails here."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []

    def walk(node: dict[str, Any], values: Any, path: str) -> None:
        if not isinstance(values, dict) or "properties" not in node:
            return
        for key, value in values.items():
            described = node["properties"].get(key, {})
            if isinstance(value, dict) and "properties" in described:
                if key not in node.get("required", []):
                    missing.append(f"{path}/{key}")
                walk(described, value, f"{path}/{key}")

    walk(schema, defaults, "")
    assert not missing, f"sections not required by values.schema.json: {missing}"
