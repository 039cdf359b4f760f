"""Fleet files: what loads, what is refused at load, and what the refusal says."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.pools import (
    EngineKind,
    FleetError,
    default_fleet_path,
    load_fleet,
    nodes_needed,
    pack_tp_groups,
    parse_fleet,
    pool_profile,
    replica_placement,
    shipped_fleets,
)
from gemma_fleet.vram import valid_tp_degrees

BASE: dict[str, Any] = {
    "node_pools": [
        {"name": "l4", "gpu": "L4", "gpus_per_node": 1, "max_nodes": 2, "cost_per_gpu_hour": 0.8},
        {
            "name": "h100",
            "gpu": "H100-80GB",
            "gpus_per_node": 2,
            "max_nodes": 2,
            "cost_per_gpu_hour": 4.0,
        },
    ],
    "model_pools": [
        {"name": "small", "model": "gemma-4-E2B", "node_pool": "l4"},
        {"name": "big", "model": "gemma-4-31B", "tp": 2, "node_pool": "h100"},
    ],
}


def fleet_with(**changes: Any) -> dict[str, Any]:
    """BASE with fields of the pool named by the key changed, e.g. big={"tp": 3}."""
    data = copy.deepcopy(BASE)
    for name, fields in changes.items():
        for group in ("model_pools", "node_pools"):
            for pool in data[group]:
                if pool["name"] == name:
                    pool.update(fields)
    return data


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(FleetError) as info:
        parse_fleet(data, source="test.yaml")
    return str(info.value)


def test_base_fleet_loads_with_defaults() -> None:
    fleet = parse_fleet(BASE)
    big = fleet.model_pool("big")
    assert big.engine is EngineKind.SIMULATOR
    assert big.replicas.start == 1
    assert fleet.node_pool("h100").resource == "gpu_pool_h100"


def test_default_fleet_serves_all_four_sizes_on_mixed_gpus() -> None:
    fleet = load_fleet(default_fleet_path())
    models = {p.model for p in fleet.model_pools}
    assert models == {"gemma-4-E2B", "gemma-4-E4B", "gemma-4-26B-A4B", "gemma-4-31B"}
    assert len({p.gpu for p in fleet.node_pools}) >= 2
    big = next(p for p in fleet.model_pools if p.model == "gemma-4-31B")
    assert (big.quant, big.tp) == ("bf16", 2)
    assert fleet.node_pool(big.node_pool).gpus_per_node >= 2
    assert all(p.engine is EngineKind.SIMULATOR for p in fleet.model_pools)
    assert all(p.simulator.speedup > 1 for p in fleet.model_pools)


@pytest.mark.parametrize("name", sorted(shipped_fleets()))
def test_every_shipped_fleet_fits_its_gpus(name: str) -> None:
    fleet = load_fleet(shipped_fleets()[name])
    catalog = load_catalog()
    for pool in fleet.model_pools:
        prof = pool_profile(pool, fleet.node_pool(pool.node_pool), catalog)
        assert prof.fits, f"{name}: {pool.name}: {prof.reason}"


def test_unknown_model_is_refused_naming_pool_and_field() -> None:
    msg = refusal(fleet_with(small={"model": "gemma-4-7B"}))
    assert "model_pools[small].model" in msg and "'gemma-4-7B'" in msg
    assert "gemma-4-E2B" in msg  # lists what is known


def test_unknown_gpu_is_refused() -> None:
    msg = refusal(fleet_with(l4={"gpu": "T4"}))
    assert "node_pools[l4].gpu" in msg and "'T4'" in msg


def test_unknown_node_pool_is_refused() -> None:
    msg = refusal(fleet_with(small={"node_pool": "a100"}))
    assert "model_pools[small].node_pool" in msg and "'a100'" in msg


def test_invalid_tp_is_refused_with_the_head_count_reason() -> None:
    msg = refusal(fleet_with(big={"tp": 3}))
    assert "model_pools[big].tp" in msg
    assert "4 global (full-attention) KV heads" in msg  # tp_refusal's own reason


def test_tp_larger_than_a_node_is_refused() -> None:
    msg = refusal(fleet_with(big={"tp": 4}))
    assert "model_pools[big].tp" in msg
    assert "2 GPUs per node" in msg and "never spans nodes" in msg


def test_pool_that_does_not_fit_its_gpu_is_refused_with_profile_reason() -> None:
    # The brief's claim "31B bf16 on a 24 GB GPU": the VRAM profile says why not.
    msg = refusal(fleet_with(big={"tp": 1, "node_pool": "l4"}))
    assert "model_pools[big]" in msg and "does not fit L4" in msg
    assert "weights need 58.2 GiB per GPU" in msg


def test_context_too_long_for_kv_is_refused() -> None:
    # Weights fit, but at 85% utilization the KV left cannot hold one full-length sequence.
    small = {"model": "gemma-4-E4B", "max_model_len": 131072, "gpu_memory_utilization": 0.85}
    msg = refusal(fleet_with(small=small))
    assert "model_pools[small]" in msg and "cannot hold one 131,072-token sequence" in msg


def test_max_model_len_beyond_context_is_refused() -> None:
    msg = refusal(fleet_with(small={"max_model_len": 262144}))
    assert "model_pools[small].max_model_len" in msg and "131,072" in msg


@pytest.mark.parametrize(
    ("where", "key"),
    [("model_pools", "tensor_parallel"), ("node_pools", "gpus"), (None, "pools")],
)
def test_unknown_keys_are_errors(where: str | None, key: str) -> None:
    data = copy.deepcopy(BASE)
    (data[where][0] if where else data)[key] = 1
    msg = refusal(data)
    assert key in msg and "unknown key" in msg
    if where:
        assert f"{where}[{data[where][0]['name']}]" in msg


def test_duplicate_pool_names_are_refused() -> None:
    data = copy.deepcopy(BASE)
    data["model_pools"].append({"name": "small", "model": "gemma-4-E4B", "node_pool": "l4"})
    assert "model_pools[small].name" in refusal(data)


def test_pool_name_must_work_as_deployment_name() -> None:
    msg = refusal(fleet_with(small={"name": "my pool/1"}))
    assert "model_pools[my pool/1].name" in msg


def test_replicas_out_of_order_are_refused() -> None:
    msg = refusal(fleet_with(small={"replicas": {"min": 3, "max": 2}}))
    assert "model_pools[small].replicas" in msg and "min 3 exceeds max 2" in msg


def test_simulated_answer_lengths_out_of_order_are_refused() -> None:
    simulator = {"answer_tokens_min": 600, "answer_tokens_max": 400}
    msg = refusal(fleet_with(small={"simulator": simulator}))
    assert "model_pools[small].simulator" in msg
    assert "answer_tokens_min 600 exceeds answer_tokens_max 400" in msg


def test_a_drain_time_of_zero_is_refused() -> None:
    msg = refusal(fleet_with(small={"drain_timeout_s": 0}))
    assert "model_pools[small].drain_timeout_s" in msg


def test_starting_replicas_must_fit_max_nodes() -> None:
    msg = refusal(fleet_with(big={"replicas": {"min": 2, "max": 3, "initial": 3}}))
    assert "node_pools[h100].max_nodes" in msg and "need 3 nodes" in msg


def test_aliases_must_name_pools_and_not_shadow_them() -> None:
    data = copy.deepcopy(BASE)
    data["aliases"] = {"gemma-4": ["small", "nope"], "big": ["small"]}
    msg = refusal(data)
    assert "aliases[gemma-4]: unknown model pool 'nope'" in msg
    assert "aliases[big]: an alias cannot reuse" in msg


def test_all_problems_are_reported_at_once() -> None:
    msg = refusal(fleet_with(small={"model": "nope"}, big={"tp": 3}))
    assert (
        "2 problems" in msg and "model_pools[small].model" in msg and "model_pools[big].tp" in msg
    )


def test_fleet_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(fleet_with(big={"tp": 3})))
    with pytest.raises(FleetError, match=r"f\.yaml: model_pools\[big\]\.tp"):
        load_fleet(path)
    path.write_text("node_pools: [")
    with pytest.raises(FleetError, match="not valid YAML"):
        load_fleet(path)


def test_replica_placement_is_one_gpu_bundle_per_rank_on_one_pool_node() -> None:
    fleet = parse_fleet(BASE)
    placement = replica_placement(fleet.model_pool("big"), fleet.node_pool("h100"))
    assert placement.strategy == "STRICT_PACK"
    assert len(placement.bundles) == 2
    assert all(
        b["GPU"] == 1 and b["gpu_pool_h100"] == 1 and b["CPU"] > 0 for b in placement.bundles
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 4]), max_size=12), st.sampled_from([4, 8]))
def test_node_packing_never_splits_a_group_and_never_wastes_a_node(
    groups: list[int], per_node: int
) -> None:
    need = nodes_needed(groups, per_node)
    assert need >= -(-sum(groups) // per_node)  # at least the GPU count demands
    # Power-of-two groups dividing the node size pack perfectly: no extra node.
    assert need == -(-sum(groups) // per_node)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 3, 4, 6, 8]), max_size=40), st.sampled_from([6, 8]))
def test_node_packing_is_first_fit_decreasing_one_group_at_a_time(
    groups: list[int], per_node: int
) -> None:
    # pack_tp_groups places a size's groups in bulk (large fleets have thousands of groups);
    # the layout must be the one placing them one by one gives, on any sizes, even ones that
    # do not divide the node.
    groups = [g for g in groups if g <= per_node]
    free: list[int] = []
    held: list[list[int]] = []
    for size in sorted(groups, reverse=True):
        i = next((i for i, room in enumerate(free) if room >= size), len(free))
        if i == len(free):
            free.append(per_node)
            held.append([])
        free[i] -= size
        held[i].append(size)
    assert pack_tp_groups(groups, per_node) == held
    assert nodes_needed(groups, per_node) == len(held)


@settings(max_examples=100, deadline=None)
@given(
    model=st.sampled_from(sorted(load_catalog().models)),
    gpu=st.sampled_from(sorted(load_catalog().gpus)),
    data=st.data(),
)
def test_loader_accepts_exactly_the_pools_the_profile_says_fit(
    model: str, gpu: str, data: Any
) -> None:
    catalog = load_catalog()
    tp = data.draw(st.sampled_from(valid_tp_degrees(catalog.model(model))))
    fleet = {
        "node_pools": [
            {"name": "p", "gpu": gpu, "gpus_per_node": 8, "max_nodes": 1, "cost_per_gpu_hour": 1}
        ],
        "model_pools": [{"name": "m", "model": model, "tp": tp, "node_pool": "p"}],
    }
    from gemma_fleet.vram import profile

    fits = profile(model, gpu, tp=tp).fits
    try:
        parse_fleet(fleet)
        loaded = True
    except FleetError as exc:
        loaded = False
        assert "does not fit" in str(exc)
    assert loaded == fits


def test_shipped_fleets_load_by_name() -> None:
    assert load_fleet("default") == load_fleet(default_fleet_path())
    assert {"default", "vllm-cpu"} <= set(shipped_fleets())


def test_local_cluster_starts_the_nodes_the_starting_replicas_need() -> None:
    from gemma_fleet.deployments.fleet.cluster import node_counts

    fleet = load_fleet(default_fleet_path())
    # l4: E2B + E4B, one GPU each, on 2-GPU nodes; h100: 26B (1) + 31B TP=2 on 4-GPU nodes.
    assert node_counts(fleet) == {"l4": 1, "h100": 1}
    assert node_counts(fleet, {"h100": 2}) == {"l4": 1, "h100": 2}
    with pytest.raises(ValueError, match="at most 2"):
        node_counts(fleet, {"h100": 3})
    with pytest.raises(ValueError, match="unknown node pools: a100"):
        node_counts(fleet, {"a100": 1})


def test_the_gateway_section_reaches_the_gateways_settings() -> None:
    """What an operator sets of the gateway lives in the fleet file (and so in the chart's
    `fleet:` values): an internal media server's network, the body limit, PDF readers."""
    from gemma_fleet.gateway import pdf_process
    from gemma_fleet.gateway.fleet import gateway_settings
    from gemma_fleet.gateway.service import GatewaySettings

    data = copy.deepcopy(BASE)
    data["gateway"] = {
        "max_body_bytes": 8 * 2**20,
        "media": {"allowed_networks": ["10.20.0.0/16"]},
        "pdf_readers": 2,
    }
    settings = gateway_settings(parse_fleet(data))
    assert settings.max_body_bytes == 8 * 2**20
    assert settings.media.allowed_networks == ["10.20.0.0/16"]
    assert settings.pdf_readers == 2
    assert settings.pools and settings.body_timeout_s == 30.0  # the rest as by default
    defaults = gateway_settings(parse_fleet(BASE))
    assert defaults.model_dump(exclude={"pools", "aliases"}) == GatewaySettings(
        pools=defaults.pools
    ).model_dump(exclude={"pools", "aliases"})
    # The reader's own defaults, for a PdfReader made without settings.
    assert defaults.pdf_read_timeout_s == pdf_process.PDF_READ_TIMEOUT_S
    assert defaults.pdf_reader_memory_mib == pdf_process.PDF_READER_MEMORY_MIB


@pytest.mark.parametrize(
    ("gateway", "expected"),
    [
        ({"media": {"allowed_networks": ["10.20.0.0/33"]}}, "gateway.media.allowed_networks"),
        ({"media": {"allowed_networks": ["intranet"]}}, "'intranet' is not a network"),
        ({"pdf_readers": 0}, "gateway.pdf_readers"),
        ({"pdf_reader": 2}, "gateway.pdf_reader"),
        ({"max_body_bytes": 10}, "gateway.max_body_bytes"),
    ],
)
def test_gateway_options_are_checked_by_name(gateway: dict[str, Any], expected: str) -> None:
    data = copy.deepcopy(BASE)
    data["gateway"] = gateway
    assert expected in refusal(data)
