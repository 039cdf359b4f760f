"""A pool's vLLM engine settings and its Ray Serve LLM config (no engine is started here)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gemma_fleet.catalog import Modality
from gemma_fleet.deployments.engines.vllm import (
    VllmEngineSpec,
    VllmSettingsError,
    build_llm_config,
    cpu_placement,
    gpu_placement,
)


def _spec(**overrides: Any) -> VllmEngineSpec:
    fields: dict[str, Any] = {
        "model_source": "google/gemma-4-31B-it",
        "served_model_name": "gemma-4-31B",
        "max_model_len": 32768,
        "tensor_parallel_size": 2,
    }
    return VllmEngineSpec(**{**fields, **overrides})


def test_gpu_pool_kwargs_carry_gemma4_parsers_and_gpu_memory() -> None:
    kwargs = _spec(
        quantization="fp8",
        kv_cache_dtype="fp8",
        max_num_seqs=128,
        max_num_batched_tokens=8192,
        modalities={Modality.IMAGE: 4},
        image_soft_tokens=560,
    ).engine_kwargs()
    assert kwargs == {
        "max_model_len": 32768,
        "tensor_parallel_size": 2,
        "dtype": "bfloat16",
        "kv_cache_dtype": "fp8",
        "quantization": "fp8",
        "max_num_seqs": 128,
        "max_num_batched_tokens": 8192,
        "seed": 0,
        "tool_call_parser": "gemma4",
        "reasoning_parser": "gemma4",
        "enable_auto_tool_choice": True,
        # audio and video get an explicit 0: no encoder profiling for inputs never accepted
        "limit_mm_per_prompt": {"image": 4, "audio": 0, "video": 0},
        "mm_processor_kwargs": {"max_soft_tokens": 560},
        "gpu_memory_utilization": 0.9,
    }


def test_text_only_pool_skips_the_towers_and_bf16_sets_no_quantization() -> None:
    kwargs = _spec(text_only=True).engine_kwargs()
    assert kwargs["language_model_only"] is True
    assert "limit_mm_per_prompt" not in kwargs
    assert "quantization" not in kwargs
    assert kwargs["kv_cache_dtype"] == "auto"


def test_cpu_host_runs_eager_and_sizes_kv_by_env() -> None:
    spec = _spec(tensor_parallel_size=1, cpu_host=True, cpu_kv_cache_gib=2)
    kwargs = spec.engine_kwargs()
    assert kwargs["enforce_eager"] is True
    assert "gpu_memory_utilization" not in kwargs
    assert spec.env_vars() == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    assert _spec().env_vars() == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"quantization": "q3_k_s"}, "quantization 'q3_k_s' unknown"),
        ({"kv_cache_dtype": "int8"}, "kv_cache_dtype 'int8' unknown"),
        ({"quantization": "q4_k_m"}, "must name a .gguf file"),
        ({"text_only": True, "modalities": {Modality.IMAGE: 1}}, "text_only pools"),
        ({"modalities": {Modality.TEXT: 1}}, "media only"),
        ({"image_soft_tokens": 100}, "not one of Gemma 4's"),
        ({"cpu_host": True}, "tensor_parallel_size 1"),
        ({"max_model_len": 0}, "greater than 0"),
        ({"gpu_memory_utilization": 1.5}, "less than or equal to 1"),
    ],
)
def test_inconsistent_settings_are_refused_with_a_reason(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(**overrides)


def test_gguf_quantization_is_accepted_for_a_gguf_file() -> None:
    spec = _spec(model_source="/models/gemma-4-31B-Q4_K_M.gguf", quantization="q4_k_m")
    assert spec.engine_kwargs()["quantization"] == "gguf"


def test_placements_for_gpu_pools_and_cpu_hosts() -> None:
    assert gpu_placement(2, "h100") == {
        "bundles": [{"GPU": 1, "gpu_pool_h100": 1}, {"GPU": 1, "gpu_pool_h100": 1}],
        "strategy": "STRICT_PACK",
    }
    assert cpu_placement() == {"bundles": [{"CPU": 1}], "strategy": "STRICT_PACK"}
    with pytest.raises(VllmSettingsError):
        cpu_placement(0)
    with pytest.raises(VllmSettingsError):
        gpu_placement(0, "h100")


def test_gpu_llm_config_is_accepted_by_ray_serve_llm_and_places_tp_ranks() -> None:
    config = build_llm_config(
        _spec(),
        deployment_config={"autoscaling_config": {"min_replicas": 1, "max_replicas": 4}},
        placement_group_config=gpu_placement(2, "h100"),
    )
    assert config.model_id == "gemma-4-31B"
    engine = config.get_engine_config()  # splits and validates every key against vLLM's args
    assert engine is not None  # typed Optional, but it raises rather than return None
    assert engine.actual_hf_model_id == "google/gemma-4-31B-it"
    assert engine.frontend_kwargs == {"tool_call_parser": "gemma4", "enable_auto_tool_choice": True}
    assert engine.engine_kwargs["reasoning_parser"] == "gemma4"
    # One GPU bundle per TP rank, all on one node of the pool (Ray Serve LLM later adds the
    # replica actor's CPU to the first bundle).
    assert engine.placement_bundles == [
        {"GPU": 1.0, "gpu_pool_h100": 1.0},
        {"GPU": 1.0, "gpu_pool_h100": 1.0},
    ]
    assert engine.placement_strategy == "STRICT_PACK"
    assert config.deployment_config["autoscaling_config"]["max_replicas"] == 4


def test_cpu_llm_config_defaults_to_a_cpu_bundle_and_passes_the_kv_env() -> None:
    config = build_llm_config(
        _spec(tensor_parallel_size=1, cpu_host=True),
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    engine = config.get_engine_config()
    assert engine is not None
    assert engine.placement_bundles == [{"CPU": 1.0}]
    assert engine.placement_strategy == "STRICT_PACK"
    assert config.runtime_env == {
        "env_vars": {
            # the engine class whose tokenize works with vLLM 0.32 (engines/vllm/engine.py)
            "RAYLLM_VLLM_ENGINE_CLS": "gemma_fleet.deployments.engines.vllm.engine.GemmaVllmEngine",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
        }
    }


@pytest.mark.parametrize(
    ("spec_overrides", "kwargs", "message"),
    [
        ({}, {}, "a GPU pool needs placement_group_config"),
        ({}, {"placement_group_config": cpu_placement()}, "does not fit a GPU pool"),
        (
            {"tensor_parallel_size": 1, "cpu_host": True},
            {"placement_group_config": gpu_placement(1, "l4")},
            "does not fit a CPU host",
        ),
        ({}, {"placement_group_config": gpu_placement(4, "h100")}, "4 GPU bundles"),
        (
            {},
            {
                "placement_group_config": gpu_placement(2, "h100"),
                "deployment_config": {"placement_group_bundles": [{"GPU": 1}]},
            },
            "must not set placement_group_bundles",
        ),
    ],
)
def test_mismatched_placement_is_refused(
    spec_overrides: dict[str, Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(VllmSettingsError, match=message):
        build_llm_config(_spec(**spec_overrides), **kwargs)
