"""Real vLLM behind a pool: engine settings and the Ray Serve LLM config built from them."""

from gemma_fleet.deployments.engines.vllm.llm_config import (
    build_llm_config,
    cpu_placement,
    gpu_placement,
    gpu_pool_resource,
)
from gemma_fleet.deployments.engines.vllm.settings import (
    VLLM_KV_CACHE_DTYPE,
    VLLM_QUANTIZATION,
    VllmEngineSpec,
    VllmSettingsError,
    family_engine_flags,
)

__all__ = [
    "VLLM_KV_CACHE_DTYPE",
    "VLLM_QUANTIZATION",
    "VllmEngineSpec",
    "VllmSettingsError",
    "build_llm_config",
    "cpu_placement",
    "family_engine_flags",
    "gpu_placement",
    "gpu_pool_resource",
]
