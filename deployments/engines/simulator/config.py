"""Configuration of one simulated replica: which Gemma 4 configuration on which GPU it imitates."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gemma_fleet.vram import KvDtype

# Key under LLMConfig.experimental_configs that carries a SimulatorConfig to the engine.
EXPERIMENTAL_CONFIG_KEY = "gemma_fleet_simulator"


class SimulatorConfig(BaseModel):
    """Everything the simulator needs to behave like vLLM serving `model` on `tp` x `gpu`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="catalog model name, e.g. gemma-4-31B")
    gpu: str = Field(description="catalog GPU name, e.g. H100-80GB")
    quant: str = "bf16"
    tp: int = Field(1, ge=1)
    max_model_len: int = Field(32_768, ge=1)
    kv_dtype: KvDtype = KvDtype.BF16
    text_only: bool = False
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int = Field(8192, ge=1)
    enable_prefix_caching: bool = True
    speedup: float = Field(1.0, gt=0, description="simulated seconds per wall-clock second")
    seed: int = 0
