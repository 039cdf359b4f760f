"""Turn a fleet's model pools into Ray Serve: one LLMServer deployment per pool (simulator or
vLLM engine). The gateway (gemma_fleet.gateway.fleet) puts itself in front of them.

Each pool's deployment is named after the pool (so the autoscaler and dashboards find it by
the fleet file's name), serves the pool's name as its model id, and asks Ray for the
placement group `placement.replica_placement` derives: its GPUs on one node of its node pool.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.pools.placement import replica_placement
from gemma_fleet.deployments.pools.schema import EngineKind, FleetSpec, ModelPool, NodePool
from gemma_fleet.deployments.pools.validate import pool_profile

if TYPE_CHECKING:
    # The internal class: what Ray Serve LLM's own functions are annotated with; the public
    # ray.serve.llm.LLMConfig subclasses it.
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
    from ray.serve.deployment import Application

    from gemma_fleet.deployments.engines.simulator import SimulatorConfig

# Name of the Ray Serve application that holds the fleet.
FLEET_APP_NAME = "gemma-fleet"
HEALTH_CHECK_PERIOD_S = 2
# Ongoing requests by which a replica may exceed the least busy one and still be preferred for
# its cached prefix (Ray's default: no limit). Small: an engine batches, so a few extra queued
# requests cost little of the prefill saved, while a stalled replica holding a hot prefix must
# not collect every request that shares it (request_router.py, tests/faults).
IMBALANCE_THRESHOLD = 4
# Ray Serve LLM's router keeps the text of every prompt it placed in a prefix tree (one actor
# per pool) and, by default, never forgets any: in an hour of steady load the tree grew 5.7 MB
# every 10 minutes, without end (benchmarks/soak). With eviction on, each replica's share of the
# tree is checked every interval and, once past the bound, cut back to the target, least
# recently matched first. The bound is what the replica's KV cache holds (the VRAM profile), at
# about 4 characters of prompt a token: a larger tree claims prefixes the engine has already
# evicted, a smaller one forgets prefixes it still has (one 2M-character bound for every pool
# remembered 3x an E4B-on-L4 cache and 40% of an E2B one). The ceiling caps the actor's memory
# where a cache is huge: short prompts cost up to 14 bytes a character, about 110 MB per replica
# at the ceiling (benchmarks/prefix_tree).
PREFIX_TREE_CHARS_PER_TOKEN = 4
PREFIX_TREE_CEILING_CHARS = 8_000_000
PREFIX_TREE_TARGET_SHARE = 0.9
PREFIX_TREE_EVICTION_INTERVAL_S = 10
PREFIX_AWARE_ROUTER = "gemma_fleet.deployments.pools.request_router.PrefixAwareRouter"


@dataclass(frozen=True)
class PoolDeployment:
    """One model pool as Ray Serve sees it."""

    pool: ModelPool
    llm_config: LLMConfig
    app: Application


def prefix_tree_bound_chars(pool: ModelPool, node_pool: NodePool) -> int:
    """Characters of prompt the router's prefix tree keeps per replica of `pool`: what one
    replica's KV cache holds on `node_pool`'s GPU (the VRAM profile, every sequence at
    `max_model_len`), capped at PREFIX_TREE_CEILING_CHARS. A vLLM pool on a CPU host keeps the
    bound of the GPU its node pool declares."""
    tokens = pool_profile(pool, node_pool, load_catalog()).kv_capacity_tokens
    return max(1, min(tokens * PREFIX_TREE_CHARS_PER_TOKEN, PREFIX_TREE_CEILING_CHARS))


def deployment_config(pool: ModelPool, node_pool: NodePool) -> dict[str, Any]:
    """Ray Serve options of a pool's deployment: its starting replica count, router (whose
    prefix tree remembers what a replica on `node_pool` can cache), health check and drain
    time. The count is fixed, not Ray Serve's autoscaling: replicas are the GPU bill, and our
    autoscaler (which knows VRAM, node pools and cost) sets them within the pool's min/max
    through Serve's external-scaler API. The placement group is not here; Ray Serve LLM
    derives it from `placement_group_config`."""
    tree_chars = prefix_tree_bound_chars(pool, node_pool)
    return {
        # An explicit count also drops Ray Serve LLM's default autoscaling_config.
        "num_replicas": pool.replicas.start,
        # Inside a pool, requests sharing a prompt prefix go to the replica that has it cached,
        # unless that replica is much busier than the others (Ray Serve LLM's router).
        "request_router_config": {
            "request_router_class": PREFIX_AWARE_ROUTER,
            "request_router_kwargs": {
                "imbalanced_threshold": IMBALANCE_THRESHOLD,
                "do_eviction": True,
                "eviction_threshold_chars": tree_chars,
                "eviction_target_chars": int(tree_chars * PREFIX_TREE_TARGET_SHARE),
                "eviction_interval_secs": PREFIX_TREE_EVICTION_INTERVAL_S,
            },
        },
        # A dead replica is noticed at its next health check: every 2 s rather than Ray Serve
        # LLM's 10, so the pool starts a replacement (and the gateway, which reads the live
        # replica counts, routes around a pool with none) within seconds. The check is cheap
        # (the engine's liveness); its timeout stays Ray Serve LLM's 10 s.
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        # A replica that scaling (or a shutdown) removes stops taking requests and answers the
        # ones it has for up to this long; Serve's default, 20 s, cut longer answers mid-stream.
        "graceful_shutdown_timeout_s": pool.drain_timeout_s,
    }


def simulator_config(pool: ModelPool, node_pool: NodePool) -> SimulatorConfig:
    """The simulator configuration of one replica of `pool` on `node_pool`'s GPU: the pool's
    real configuration, which the simulator imitates (served here, planned by the autoscaler)."""
    from gemma_fleet.deployments.engines.simulator import SimulatorConfig

    return SimulatorConfig(
        model=pool.model,
        gpu=node_pool.gpu,
        quant=pool.quant,
        tp=pool.tp,
        max_model_len=pool.max_model_len,
        kv_dtype=pool.kv_dtype,
        text_only=pool.text_only,
        gpu_memory_utilization=pool.gpu_memory_utilization,
        max_num_seqs=pool.max_num_seqs,
        max_num_batched_tokens=pool.max_num_batched_tokens,
        enable_prefix_caching=pool.enable_prefix_caching,
        speedup=pool.simulator.speedup,
        seed=pool.simulator.seed,
        answer_tokens_min=pool.simulator.answer_tokens_min,
        answer_tokens_max=pool.simulator.answer_tokens_max,
    )


def simulator_pool_config(pool: ModelPool, node_pool: NodePool) -> tuple[LLMConfig, dict[str, Any]]:
    """LLMConfig and bind kwargs of a simulated pool, placed exactly as the real engine would
    be."""
    from gemma_fleet.deployments.engines.simulator import (
        simulator_bind_kwargs,
        simulator_llm_config,
    )

    llm_config = simulator_llm_config(
        pool.name,
        simulator_config(pool, node_pool),
        placement_group_config=replica_placement(pool, node_pool).as_llm_config(),
        deployment_config=deployment_config(pool, node_pool),
    )
    return llm_config, simulator_bind_kwargs()


def vllm_pool_config(
    pool: ModelPool, node_pool: NodePool, *, checkpoint: str, cpu_host: bool
) -> LLMConfig:
    """LLMConfig of a pool served by real vLLM from `checkpoint` (a path or Hugging Face id).

    On a CPU host (vLLM's CPU build) the replica runs one CPU rank whatever the pool's TP, asks
    for no GPUs but keeps the node-pool resource (it still lands on its pool's node), and its
    context is capped at what the checkpoint's config allows (tiny checkpoints are short)."""
    from gemma_fleet.deployments.engines.vllm import VllmEngineSpec, build_llm_config

    tp = 1 if cpu_host else pool.tp
    max_model_len = pool.max_model_len
    if cpu_host:
        max_model_len = min(max_model_len, _checkpoint_context(checkpoint) or max_model_len)
    spec = VllmEngineSpec(
        model_source=checkpoint,
        served_model_name=pool.name,
        max_model_len=max_model_len,
        tensor_parallel_size=tp,
        quantization=pool.quant,
        kv_cache_dtype=pool.kv_dtype.value,
        text_only=pool.text_only,
        gpu_memory_utilization=pool.gpu_memory_utilization,
        max_num_seqs=pool.max_num_seqs,
        max_num_batched_tokens=pool.max_num_batched_tokens,
        cpu_host=cpu_host,
    )
    placement = replica_placement(pool.model_copy(update={"tp": tp}), node_pool, gpu=not cpu_host)
    llm_config = build_llm_config(
        spec,
        deployment_config=deployment_config(pool, node_pool),
        placement_group_config=placement.as_llm_config(),
    )
    # The pool's extra engine arguments pass through unchanged; Ray Serve LLM checks each
    # name against vLLM's own argument classes when the deployment is built.
    llm_config.engine_kwargs.update(pool.engine_args)
    return llm_config


def _checkpoint_context(checkpoint: str) -> int | None:
    """max_position_embeddings of a local checkpoint's text config, when it states one."""
    config = Path(checkpoint) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    text = data.get("text_config", data)
    value = text.get("max_position_embeddings")
    return int(value) if isinstance(value, int) else None


def build_pool_deployments(
    fleet: FleetSpec,
    *,
    checkpoints: Mapping[str, str] | None = None,
    cpu_host: bool = False,
) -> list[PoolDeployment]:
    """One bound LLMServer deployment per model pool, named after the pool.

    `checkpoints` maps pool names to what vLLM loads, overriding the pool's `checkpoint` (the
    local fleet passes tiny checkpoints here on CPU hosts); a vLLM pool with neither loads the
    catalog's Hugging Face id. `cpu_host` selects vLLM's CPU build for vLLM pools.
    """
    # The internal builder the public ray.serve.llm.build_llm_deployment delegates to: it is
    # annotated with the LLMConfig class both engine helpers return.
    from ray.llm._internal.serve.core.server.builder import build_llm_deployment

    checkpoints = checkpoints or {}
    catalog = load_catalog()
    out = []
    for pool in fleet.model_pools:
        node_pool = fleet.node_pool(pool.node_pool)
        bind_kwargs: dict[str, Any] = {}
        if pool.engine is EngineKind.SIMULATOR:
            llm_config, bind_kwargs = simulator_pool_config(pool, node_pool)
        else:
            source = (
                checkpoints.get(pool.name) or pool.checkpoint or catalog.model(pool.model).hf_id
            )
            llm_config = vllm_pool_config(pool, node_pool, checkpoint=source, cpu_host=cpu_host)
        app = build_llm_deployment(
            llm_config,
            bind_kwargs=bind_kwargs,
            # Applied after Ray Serve LLM's "<server class>:" prefix: the deployment is the pool.
            override_serve_options={"name": pool.name},
        )
        out.append(PoolDeployment(pool=pool, llm_config=llm_config, app=app))
    return out
