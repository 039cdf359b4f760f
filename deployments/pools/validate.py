"""Checks a fleet against the catalog and the VRAM model: every refusal names the pool and the
field, and says why (the VRAM profile's own reason when a pool does not fit its GPU)."""

from __future__ import annotations

from collections import Counter

from gemma_fleet.catalog import Catalog
from gemma_fleet.deployments.pools.placement import nodes_needed
from gemma_fleet.deployments.pools.schema import FleetSpec, ModelPool, NodePool
from gemma_fleet.vram import (
    ProfileError,
    RuntimeAssumptions,
    VramProfile,
    compute_profile,
    tp_refusal,
)


def pool_profile(pool: ModelPool, node_pool: NodePool, catalog: Catalog) -> VramProfile:
    """The VRAM profile of one replica of `pool` on its node pool's GPU, with the pool's own
    vLLM settings (raises KeyError for unknown names, ProfileError for an invalid config)."""
    runtime = RuntimeAssumptions(
        gpu_memory_utilization=pool.gpu_memory_utilization,
        max_num_batched_tokens=pool.max_num_batched_tokens,
        max_num_seqs=pool.max_num_seqs,
    )
    return compute_profile(
        catalog.model(pool.model),
        catalog.gpu(node_pool.gpu),
        catalog.quant(pool.quant),
        vocab_size=catalog.family.vocab_size,
        tp=pool.tp,
        max_model_len=pool.max_model_len,
        kv_dtype=pool.kv_dtype,
        text_only=pool.text_only,
        runtime=runtime,
    )


def fleet_errors(fleet: FleetSpec, catalog: Catalog) -> list[str]:
    """Every problem with `fleet`, one line each, as `<where>.<field>: <why>`."""
    errors: list[str] = []
    errors += _duplicates("node_pools", [p.name for p in fleet.node_pools])
    errors += _duplicates("model_pools", [p.name for p in fleet.model_pools])
    node_pools = {p.name: p for p in fleet.node_pools}
    for node_pool in fleet.node_pools:
        if node_pool.gpu not in catalog.gpus:
            errors.append(
                f"node_pools[{node_pool.name}].gpu: unknown GPU {node_pool.gpu!r}; "
                f"known: {', '.join(catalog.gpus)}"
            )
    for pool in fleet.model_pools:
        errors += _model_pool_errors(pool, node_pools.get(pool.node_pool), node_pools, catalog)
    errors += _alias_errors(fleet)
    if not errors:
        errors += _capacity_errors(fleet)
    return errors


def _duplicates(where: str, names: list[str]) -> list[str]:
    return [
        f"{where}[{name}].name: {count} pools are called {name!r}; names must be unique"
        for name, count in Counter(names).items()
        if count > 1
    ]


def _model_pool_errors(
    pool: ModelPool,
    node_pool: NodePool | None,
    node_pools: dict[str, NodePool],
    catalog: Catalog,
) -> list[str]:
    where = f"model_pools[{pool.name}]"
    errors = []
    if pool.model not in catalog.models:
        errors.append(
            f"{where}.model: unknown model {pool.model!r}; known: {', '.join(catalog.models)}"
        )
    if pool.quant not in catalog.quants:
        errors.append(
            f"{where}.quant: unknown quantization {pool.quant!r}; "
            f"known: {', '.join(catalog.quants)}"
        )
    if node_pool is None:
        errors.append(
            f"{where}.node_pool: unknown node pool {pool.node_pool!r}; "
            f"known: {', '.join(node_pools) or 'none'}"
        )
    if errors:
        return errors
    assert node_pool is not None
    model = catalog.model(pool.model)
    if (refusal := tp_refusal(model, pool.tp)) is not None:
        return [f"{where}.tp: {refusal}"]
    if pool.tp > node_pool.gpus_per_node:
        return [
            f"{where}.tp: tp {pool.tp} exceeds the {node_pool.gpus_per_node} GPUs per node of "
            f"node pool {node_pool.name!r}; a tensor-parallel group never spans nodes"
        ]
    if pool.max_model_len > model.context_length:
        return [
            f"{where}.max_model_len: {pool.max_model_len:,} exceeds {model.name}'s context "
            f"length {model.context_length:,}"
        ]
    if node_pool.gpu not in catalog.gpus:
        return []  # reported once, on the node pool
    try:
        prof = pool_profile(pool, node_pool, catalog)
    except ProfileError as exc:
        return [f"{where}: {exc}"]
    if not prof.fits:
        return [
            f"{where}: {pool.model} {pool.quant} tp={pool.tp} max_model_len="
            f"{pool.max_model_len:,} does not fit {node_pool.gpu} (node pool "
            f"{node_pool.name!r}): {prof.reason}"
        ]
    return []


def _alias_errors(fleet: FleetSpec) -> list[str]:
    pools = {p.name for p in fleet.model_pools}
    errors = []
    for alias, targets in fleet.aliases.items():
        if alias in pools:
            errors.append(f"aliases[{alias}]: an alias cannot reuse a model pool's name")
        if not targets:
            errors.append(f"aliases[{alias}]: lists no model pools")
        errors += [
            f"aliases[{alias}]: unknown model pool {t!r}; known: {', '.join(pools)}"
            for t in targets
            if t not in pools
        ]
    return errors


def _capacity_errors(fleet: FleetSpec) -> list[str]:
    """The replicas a fleet starts with must fit its node pools' max_nodes."""
    errors = []
    for node_pool in fleet.node_pools:
        groups = [
            p.tp
            for p in fleet.model_pools
            if p.node_pool == node_pool.name
            for _ in range(p.replicas.start)
        ]
        need = nodes_needed(groups, node_pool.gpus_per_node)
        if need > node_pool.max_nodes:
            errors.append(
                f"node_pools[{node_pool.name}].max_nodes: the starting replicas of its model "
                f"pools need {need} nodes of {node_pool.gpus_per_node} GPUs; max_nodes is "
                f"{node_pool.max_nodes}"
            )
    return errors
