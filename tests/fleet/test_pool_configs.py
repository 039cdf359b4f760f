"""What each pool becomes for Ray Serve LLM, before anything is deployed: the engine's
configuration, the replica's placement group and the replica bounds."""

from __future__ import annotations

from pathlib import Path

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.pools import load_fleet, replica_placement
from gemma_fleet.deployments.pools.schema import ModelPool, NodePool
from gemma_fleet.deployments.pools.serve_app import (
    PREFIX_TREE_CEILING_CHARS,
    deployment_config,
    simulator_pool_config,
    vllm_pool_config,
)
from gemma_fleet.deployments.pools.validate import pool_profile

FLEET = load_fleet("default")
BIG = next(p for p in FLEET.model_pools if p.model == "gemma-4-31B")
H100 = FLEET.node_pool(BIG.node_pool)


def test_simulated_pool_imitates_its_gpu_and_asks_for_its_gpus() -> None:
    config, bind_kwargs = simulator_pool_config(BIG, H100)
    assert config.model_id == BIG.name
    simulated = config.experimental_configs["gemma_fleet_simulator"]
    assert (simulated["model"], simulated["gpu"], simulated["tp"]) == (
        "gemma-4-31B",
        "H100-80GB",
        2,
    )
    assert simulated["speedup"] == BIG.simulator.speedup
    assert config.placement_group_config == replica_placement(BIG, H100).as_llm_config()
    assert "engine_cls" in bind_kwargs


def test_a_simulated_pool_draws_its_answer_lengths_from_the_fleet_file() -> None:
    options = BIG.simulator.model_copy(update={"answer_tokens_min": 400, "answer_tokens_max": 600})
    config, _ = simulator_pool_config(BIG.model_copy(update={"simulator": options}), H100)
    simulated = config.experimental_configs["gemma_fleet_simulator"]
    assert (simulated["answer_tokens_min"], simulated["answer_tokens_max"]) == (400, 600)


def test_a_pool_starts_its_replicas_and_leaves_scaling_to_our_autoscaler() -> None:
    config = deployment_config(BIG, H100)
    assert config["num_replicas"] == BIG.replicas.start
    assert "autoscaling_config" not in config  # Ray Serve's own autoscaler stays off


def tree_bound(pool: ModelPool, node_pool: NodePool) -> tuple[int, int]:
    """The router's prefix-tree bound and eviction target for one pool, as deployed."""
    kwargs = deployment_config(pool, node_pool)["request_router_config"]["request_router_kwargs"]
    assert kwargs["do_eviction"] is True
    return kwargs["eviction_threshold_chars"], kwargs["eviction_target_chars"]


def test_the_routers_prefix_tree_remembers_what_a_replica_can_cache() -> None:
    """Each pool's router keeps about as much prompt text per replica as the replica's KV cache
    holds (4 characters a token), so it neither claims prefixes the engine has evicted nor
    forgets ones it still has: the E2B replica on an L4 caches 8x what the E4B one does."""
    pools = {p.name: p for p in FLEET.model_pools}
    for name in ("gemma-4-e2b", "gemma-4-e4b", "gemma-4-26b-a4b", "gemma-4-31b"):
        pool = pools[name]
        node_pool = FLEET.node_pool(pool.node_pool)
        tokens = pool_profile(pool, node_pool, load_catalog()).kv_capacity_tokens
        bound, target = tree_bound(pool, node_pool)
        assert bound == tokens * 4, name
        assert 0.85 * bound <= target < bound, name  # cut back below the bound, not to nothing
    e2b = pools["gemma-4-e2b"]
    e4b = pools["gemma-4-e4b"]
    l4 = FLEET.node_pool(e2b.node_pool)
    assert tree_bound(e2b, l4)[0] > 5_000_000 and tree_bound(e4b, l4)[0] < 700_000


def test_a_huge_kv_cache_keeps_the_tree_under_its_memory_ceiling() -> None:
    """E2B alone on a 141 GB H200 caches over 10M tokens; its tree stops at the ceiling
    (about 110 MB per replica at worst, benchmarks/prefix_tree)."""
    e2b = next(p for p in FLEET.model_pools if p.name == "gemma-4-e2b")
    h200 = H100.model_copy(update={"name": "h200", "gpu": "H200"})
    assert (
        pool_profile(e2b, h200, load_catalog()).kv_capacity_tokens * 4 > PREFIX_TREE_CEILING_CHARS
    )
    assert tree_bound(e2b, h200)[0] == PREFIX_TREE_CEILING_CHARS


def test_a_removed_replica_drains_for_its_pools_drain_time() -> None:
    """Serve's own default (20 s) cut answers longer than that when a replica was removed."""
    assert deployment_config(BIG, H100)["graceful_shutdown_timeout_s"] == 600.0  # the SDKs' timeout
    patient = BIG.model_copy(update={"drain_timeout_s": 1800.0})
    assert deployment_config(patient, H100)["graceful_shutdown_timeout_s"] == 1800.0
    # The gateway carries every pool's answers: it drains as long as the longest pool.
    pools = [patient if p is BIG else p for p in FLEET.model_pools]
    assert FLEET.model_copy(update={"model_pools": pools}).longest_drain_s == 1800.0


def test_vllm_pool_on_gpus_runs_tensor_parallel_over_its_bundles() -> None:
    pool = BIG.model_copy(update={"engine_args": {"enable_chunked_prefill": True}})
    config = vllm_pool_config(pool, H100, checkpoint="google/gemma-4-31B-it", cpu_host=False)
    assert config.engine_kwargs["tensor_parallel_size"] == 2
    assert config.engine_kwargs["enable_chunked_prefill"] is True  # passed through
    assert config.engine_kwargs["tool_call_parser"] == "gemma4"
    assert config.placement_group_config is not None
    bundles = config.placement_group_config["bundles"]
    assert [b["GPU"] for b in bundles] == [1.0, 1.0]
    assert config.placement_group_config["strategy"] == "STRICT_PACK"


def test_vllm_pool_on_a_cpu_host_runs_one_rank_pinned_to_its_pool(tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"text_config": {"max_position_embeddings": 4096}}')
    config = vllm_pool_config(BIG, H100, checkpoint=str(checkpoint), cpu_host=True)
    assert config.engine_kwargs["tensor_parallel_size"] == 1
    assert config.engine_kwargs["max_model_len"] == 4096  # capped to the checkpoint's context
    assert config.placement_group_config is not None
    (bundle,) = config.placement_group_config["bundles"]
    assert "GPU" not in bundle and bundle["gpu_pool_h100"] == 1.0
