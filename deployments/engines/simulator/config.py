"""Configuration of one simulated replica: which Gemma 4 configuration on which GPU it imitates."""

from __future__ import annotations

from typing import Literal

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
    # Natural length of a plain-text answer, drawn per request from its seed (before max_tokens).
    answer_tokens_min: int = Field(16, ge=1)
    answer_tokens_max: int = Field(256, ge=1)
    # "wall": simulated time follows the wall clock (x speedup) while idle, as a served replica
    # must. "virtual": it advances only by step times and steps do not sleep: for benchmarks and
    # capacity planning, where idle gaps between closed-loop requests must not count.
    clock: Literal["wall", "virtual"] = "wall"
    # Fixed cost of one engine step (roofline.STEP_OVERHEAD_S unless overridden).
    step_overhead_s: float | None = Field(None, ge=0)
