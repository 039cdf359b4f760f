"""What each pool becomes for Ray Serve LLM, before anything is deployed: the engine's
configuration, the replica's placement group and the replica bounds."""

from __future__ import annotations

from pathlib import Path

from gemma_fleet.deployments.pools import load_fleet, replica_placement
from gemma_fleet.deployments.pools.serve_app import (
    deployment_config,
    simulator_pool_config,
    vllm_pool_config,
)

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
    config = deployment_config(BIG)
    assert config["num_replicas"] == BIG.replicas.start
    assert "autoscaling_config" not in config  # Ray Serve's own autoscaler stays off


def test_a_removed_replica_drains_for_its_pools_drain_time() -> None:
    """Serve's own default (20 s) cut answers longer than that when a replica was removed."""
    assert deployment_config(BIG)["graceful_shutdown_timeout_s"] == 600.0  # the SDKs' timeout
    patient = BIG.model_copy(update={"drain_timeout_s": 1800.0})
    assert deployment_config(patient)["graceful_shutdown_timeout_s"] == 1800.0
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
